"""The inference service's shell: settings → the model version → KServe's ModelServer.

``python -m fetalmlops.inference`` (the image's entry point) and ``fetalmlops run inference``
serve ``FETALMLOPS_INFERENCE_MODEL_URI`` on ``FETALMLOPS_HTTP_HOST:FETALMLOPS_HTTP_PORT``.
Without a model configured the service still starts, live and unready (``/readyz`` 503), as on
a platform where nothing has been trained yet; a configured model that cannot be loaded stops
the process with the reason, so a deployment error is loud (and Kubernetes retries).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from fetalmlops.common.service import ReadinessCheck
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.inference.archive import ArchiveError, open_version
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.server import model_ready, serve
from fetalmlops.inference.settings import SERVICE_NAME, InferenceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Serving:
    predictors: list[PlanePredictor]
    readiness: dict[str, ReadinessCheck]


def open_predictor(
    source: str | Path, settings: Settings, own: InferenceSettings, cache: Path
) -> PlanePredictor:
    """The version at ``source`` unpacked under ``cache`` and loaded; raises ArchiveError."""
    archive = open_version(source, cache, store=lambda: open_store(settings))
    try:
        predictor = PlanePredictor(archive, own.model_name, torch.device(own.device))
        predictor.load()
    except (RuntimeError, OSError) as exc:
        raise ArchiveError(f"{archive.mar.name} does not load on {own.device}: {exc}") from exc
    log.info(
        "model loaded",
        extra={"model": predictor.name, "model_version": archive.model_version},
    )
    return predictor


def build(settings: Settings, own: InferenceSettings, cache: Path) -> Serving:
    predictors = []
    if own.model_uri:
        predictors.append(open_predictor(own.model_uri, settings, own, cache))
    return Serving(predictors, {"model": model_ready(predictors)})


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
        serve(serving.predictors, settings.http_host, settings.http_port, serving.readiness)
