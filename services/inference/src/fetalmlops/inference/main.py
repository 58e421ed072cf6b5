"""The inference service's shell: settings → bus, model version, predictor → KServe's server.

``python -m fetalmlops.inference`` (the image's entry point) and ``fetalmlops run inference``
serve ``FETALMLOPS_INFERENCE_MODEL_URI`` on ``FETALMLOPS_HTTP_HOST:FETALMLOPS_HTTP_PORT``;
``fetalmlops serve`` serves the version its options name through the same `build` and
`run_serving`. Prediction events go to the configured bus; with
``FETALMLOPS_INFERENCE_RELOAD_ON_PROMOTION`` a thread follows `fetal.models.promoted`, and with
``FETALMLOPS_INFERENCE_FOLLOW_ROLLOUTS`` another follows `fetal.models.rollout` (shadow and
canary challengers).
Without a model configured the service still starts, as on a platform where nothing has been
trained yet: with ``FETALMLOPS_INFERENCE_MODEL_NAME`` and promotions followed, it serves that
model under that name, unready (``/readyz`` and every request to it 503) until the registry
promotes its first version, then that version and the ones after it; otherwise it stays live
and unready, serving nothing. A configured model that cannot be loaded stops the process with
the reason, so a deployment error is loud (and Kubernetes retries).
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from fetalmlops.common.bus import Bus, open_bus
from fetalmlops.common.memory import return_large_blocks
from fetalmlops.common.service import ReadinessCheck
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.inference.archive import Archive, ArchiveError, open_version
from fetalmlops.inference.energy import Accountant
from fetalmlops.inference.guard import ServeRefused
from fetalmlops.inference.limits import ImageLimits
from fetalmlops.inference.predictor import Options, PlanePredictor
from fetalmlops.inference.publisher import PredictionPublisher
from fetalmlops.inference.reload import Follower, Following, follow
from fetalmlops.inference.rollout import RolloutFollower
from fetalmlops.inference.server import model_ready, serve
from fetalmlops.inference.settings import SERVICE_NAME, InferenceSettings
from fetalmlops.v1 import predictions_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    predictors: list[PlanePredictor]
    readiness: dict[str, ReadinessCheck]
    bus: Bus
    publisher: PredictionPublisher
    accountant: Accountant | None = None


def build(
    settings: Settings,
    own: InferenceSettings,
    cache: Path,
    source: str | Path | None = None,
    bus: Bus | None = None,
) -> Serving:
    """Everything a server needs, the model at ``source`` (default: ``own.model_uri``)
    loaded, or without one the predictor awaiting ``own.model_name``'s first promoted version;
    on ``bus`` (default: the one ``settings`` configure). Raises ArchiveError."""
    source = own.model_uri if source is None else source
    bus = bus or open_bus(settings)
    publisher = PredictionPublisher(bus, settings.topics.predictions, settings.service_name)
    accountant = (
        Accountant(
            bus, settings.topics.inference_energy, settings.service_name, socket.gethostname(),
            own.energy_window_s, own.country_iso_code,
        )
        if own.energy_window_s > 0
        else None
    )  # fmt: skip

    def publish(events: Sequence[predictions_pb2.PredictionMade]) -> None:
        if accountant is not None:
            accountant.tally.count(events)
        publisher.submit(events)

    options = Options(
        max_batch_size=own.max_batch_size,
        max_batch_delay_ms=own.max_batch_delay_ms,
        explain_timeout_s=own.explain_timeout_s,
        publish=publish,
        parallel_runs=own.parallel_runs,
        limits=ImageLimits(own.max_pixels, own.max_side, own.max_frames, own.max_request_images),
        max_concurrent_decodes=own.max_concurrent_decodes,
        max_shadows_in_flight=own.max_shadows_in_flight,
    )
    try:
        if source is not None:
            predictors = [open_predictor(source, settings, own, cache, options)]
        elif own.model_name and own.reload_on_promotion:
            predictors = [awaiting_predictor(own.model_name, own, options)]
        else:
            predictors = []
    except ArchiveError:
        publisher.close()
        bus.close()
        raise
    return Serving(predictors, {"model": model_ready(predictors)}, bus, publisher, accountant)


def open_predictor(
    source: str | Path,
    settings: Settings,
    own: InferenceSettings,
    cache: Path,
    options: Options | None = None,
) -> PlanePredictor:
    """The version at ``source`` unpacked under ``cache`` and loaded; raises ArchiveError."""
    archive = opener(settings, cache)(source)
    try:
        predictor = PlanePredictor(archive, own.model_name, torch.device(own.device), options)
        predictor.load()
    except (RuntimeError, OSError) as exc:
        raise ArchiveError(f"{archive.mar.name} does not load on {own.device}: {exc}") from exc
    log.info(
        "model loaded",
        extra={"model": predictor.name, "model_version": archive.model_version},
    )
    return predictor


def awaiting_predictor(name: str, own: InferenceSettings, options: Options) -> PlanePredictor:
    """The predictor of model ``name`` before its first version: its promotion loads it."""
    log.info("waiting for the first promoted version", extra={"model": name})
    return PlanePredictor(None, name, torch.device(own.device), options)


def opener(settings: Settings, cache: Path) -> Callable[[str | Path], Archive]:
    def open_source(source: str | Path) -> Archive:
        return open_version(source, cache, store=lambda: open_store(settings))

    return open_source


def run_serving(
    serving: Serving, settings: Settings, own: InferenceSettings, cache: Path, host: str, port: int
) -> None:
    """Serves until SIGTERM; then stops following promotions and rollouts, publishes what is
    queued and flushes the spans.

    Raises ServeRefused before serving when the bearer-token rules forbid it.
    """
    try:
        with serving_session(serving, settings, own, cache):
            serve(serving.predictors, own, host, port, serving.readiness)
    finally:
        provider = trace.get_tracer_provider()
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # flushes the spans still batched for export


@contextmanager
def serving_session(
    serving: Serving, settings: Settings, own: InferenceSettings, cache: Path
) -> Iterator[None]:
    """What runs beside the server while it serves: the energy account and the threads
    following promotions and rollouts; on the way out they stop, what is queued is published
    and the bus is closed."""
    return_large_blocks()  # decoded pictures are freed back to the system, not kept per thread
    if serving.accountant is not None:
        serving.accountant.start()
    followings = follow_changes(serving, settings, own, cache)
    try:
        yield
    finally:
        for following in followings:
            following.close()
        if serving.accountant is not None:
            serving.accountant.close()
        serving.publisher.close()
        serving.bus.close()


def follow_changes(
    serving: Serving, settings: Settings, own: InferenceSettings, cache: Path
) -> list[Following]:
    """For every predictor, a version awaited included, the threads following its promotions
    and its rollout states, as ``own`` asks; closed by the caller."""
    followings: list[Following] = []
    topics = settings.topics
    for predictor in serving.predictors:
        if own.reload_on_promotion:
            promotions = Follower(predictor, opener(settings, cache))
            followings.append(
                follow(serving.bus, promotions, topics.models_promoted, topics.deadletter)
            )
        if own.follow_rollouts:
            rollouts = RolloutFollower(predictor, opener(settings, cache))
            followings.append(
                follow(serving.bus, rollouts, topics.models_rollout, topics.deadletter, "rollouts")
            )
    return followings


def main() -> None:
    settings, own = Settings(service_name=SERVICE_NAME), InferenceSettings()
    configure_logging(settings)
    configure_tracing(settings)
    with tempfile.TemporaryDirectory(prefix="fetalmlops-inference-") as scratch:
        cache = own.cache_dir or Path(scratch)
        try:
            serving = build(settings, own, cache)
        except ArchiveError as exc:
            log.error("cannot serve the configured model", extra={"reason": str(exc)})
            sys.exit(2)
        try:
            run_serving(serving, settings, own, cache, settings.http_host, settings.http_port)
        except ServeRefused as exc:
            log.error("refusing to serve", extra={"reason": str(exc)})
            sys.exit(2)
