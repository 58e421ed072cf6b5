"""The KServe predictor: the champion, and during a rollout its challenger, answered over
KServe's V1 and V2 protocols.

KServe's ``Model.__call__`` runs ``preprocess`` → ``validate`` → ``predict`` (or ``explain``)
→ ``postprocess`` and times each stage into its Prometheus histograms. Here ``preprocess``
decodes the request for the champion (refusing client mistakes with `Refused`, HTTP 400 or
413: the champion's metadata is what clients read), at most ``max_concurrent_decodes`` requests
at a time since each decode holds a full-size picture, ``predict`` hands the images to the
micro-batcher of the arm that answers, and ``postprocess`` shapes the answer for the protocol
the request came in, naming its version and arm, then queues one PHI-free `fetal.predictions`
event per image. KServe calls these on its event loop, so decoding and the model run in the
loop's executor: probes keep answering during a batch.

A request is served by the `Arms` (`arms.py`) it was decoded with, until it is answered: a
promotion or a rollout change (``change``, called from the follower threads of `reload.py` and
`rollout.py`) replaces the arms in one assignment and drops nothing. During a rollout:

* shadow: the champion answers; once the answer is shaped, the challenger scores the same
  images in a task of its own (`shadow.py`) whose events are ``ARM_SHADOW``. The answer never
  waits for it, and its failure is logged (its type, never its message) and counted;
* canary: a request `Arms.answering` puts on the challenger is answered by it. When the
  challenger fails (its run, or a decoding it refuses), the champion answers and its events
  say ``challenger_failed``: a client never sees the challenger fail.

A predictor made before its model has any version (no archive, only the model's name) awaits
the first: unready, every request and metadata route answers 503 (`ModelNotReady`), until a
follower adopts the first promoted version through ``change`` and it becomes ready.

A challenger whose archive decodes differently (`Archive.decoding_digest`: another handler,
preprocessing code or parameters) decodes the request again for itself; one that agrees
scores the champion's tensors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from kserve import Model
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse
from opentelemetry import trace

from fetalmlops.inference import metadata, protocol
from fetalmlops.inference.archive import Archive
from fetalmlops.inference.arms import Arm, Arms, Loaded, version_number
from fetalmlops.inference.batching import BatchRun, MicroBatcher
from fetalmlops.inference.events import Observation, Served, prediction_event, prediction_id
from fetalmlops.inference.explain import explanation_request, explanations
from fetalmlops.inference.limits import DecodeSlots, ImageLimits
from fetalmlops.inference.metrics import (
    BATCH_IMAGES,
    CANARY_FALLBACKS,
    CHALLENGER_VERSION,
    PREDICTIONS,
    REQUEST_SECONDS,
    SERVED_VERSION,
    SHADOW_RUNS,
)
from fetalmlops.inference.protocol import Batch
from fetalmlops.inference.shadow import ShadowRuns
from fetalmlops.v1 import predictions_pb2

Publish = Callable[[Sequence[predictions_pb2.PredictionMade]], None]
Change = Callable[[Arms | None], Arms | None]
log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class Options:
    """How requests are served (`InferenceSettings` by default)."""

    max_batch_size: int = 16
    max_batch_delay_ms: float = 2.0
    explain_timeout_s: float = 20.0
    publish: Publish | None = None  # where prediction events go; None: nowhere
    parallel_runs: int = 1
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_concurrent_decodes: int = 2
    max_shadows_in_flight: int = 16


@dataclass(frozen=True)
class Received:
    """A request decoded for the champion of its arms; those arms answer it whatever happens."""

    batch: Batch
    arms: Arms
    arm: Arm  # who answers: the champion, or a canary's challenger
    request_id: str
    started: float  # time.perf_counter() when the request reached preprocess
    decoded: float  # and when its decoding ended
    payload: object = None  # kept only when the challenger decodes otherwise than the champion


@dataclass(frozen=True)
class Scored:
    """A request's images scored by one arm, as that arm decoded them."""

    received: Received
    loaded: Loaded
    arm: Arm
    batch: Batch
    probabilities: torch.Tensor
    embeddings: torch.Tensor | None
    challenger_failed: bool = False


class PlanePredictor(Model):  # type: ignore[misc]  # kserve ships no type information
    name: str
    ready: bool

    def __init__(
        self,
        archive: Archive | None,
        name: str | None = None,
        device: torch.device | None = None,
        options: Options | None = None,
    ) -> None:
        """Serves ``archive`` once `load` has loaded it. Without an archive, the predictor of
        the model ``name`` awaits its first version: unready, it answers every request with
        HTTP 503 until a promotion or a rollout state gives it one (`reload.py`, `rollout.py`).
        """
        if not name:
            if archive is None:
                raise ValueError("a predictor awaiting its first version needs the model's name")
            name = archive.model_name
        super().__init__(name)
        self.pending = archive  # what `load` loads
        # The registry's name, which promotions and rollout states carry; `name` is the paths'.
        self.registry_name = name if archive is None else archive.model_name
        self.device = device or torch.device("cpu")
        self.options = options or Options()
        self.arms: Arms | None = None
        self.decodes = DecodeSlots(self.options.max_concurrent_decodes)
        self.shadows = ShadowRuns(self.options.max_shadows_in_flight)
        # Taken by the follower threads, one change at a time; a request never takes it.
        self._changing = threading.Lock()

    @property
    def awaiting_first_version(self) -> bool:
        """No version served, none to load: the model had none when this process started."""
        return self.arms is None and self.pending is None

    @property
    def archive(self) -> Archive:
        """The champion's version, served or about to be; ModelNotReady (HTTP 503) while the
        first version is awaited."""
        archive = self.arms.champion.archive if self.arms is not None else self.pending
        if archive is None:
            raise ModelNotReady(self.name, "The model awaits its first promoted version.")
        return archive

    @property
    def model_version(self) -> str:
        return self.archive.model_version

    def load(self) -> bool:
        """Loads the TorchScript model; ready only once it has. Awaiting its first version, the
        predictor has nothing to load (KServe calls this for a request to an unready model)."""
        pending = self.pending
        if pending is None:
            return self.ready
        self.change(lambda _: Arms(self.loaded_version(pending)))
        return True

    def switch(self, archive: Archive) -> None:
        """Serves ``archive`` as the champion alone from the next request on, ending any
        rollout, as a promotion does (`reload.py`); blocks while it loads, so call it off the
        event loop."""

        def promote(arms: Arms | None) -> Arms:
            champion = self.loaded_version(archive)
            if arms is None:
                return Arms(champion)
            return Arms(champion, sequence=arms.sequence, decided_ns=arms.decided_ns)

        self.change(promote)

    def change(self, step: Change) -> Arms | None:
        """Serves the arms ``step`` makes of the current ones, None meaning no change.

        ``step`` may load versions (seconds): the followers run it in their threads, one change
        at a time so neither undoes the other's. One assignment then swaps the arms: no request
        waits, and one decoded before keeps the arms it started with.
        """
        with self._changing:
            arms = step(self.arms)
            if arms is not None:
                self.arms = arms
                self.ready = True  # a first version adopted by a follower included
                SERVED_VERSION.labels(self.name).set(version_number(arms.champion.version))
                challenger = arms.challenger
                CHALLENGER_VERSION.labels(self.name).set(
                    0 if challenger is None else version_number(challenger.version)
                )
            return arms

    def loaded_version(self, archive: Archive) -> Loaded:
        classifier = archive.load(self.device)
        labels = (self.name, archive.model_version)

        def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            probabilities, embeddings = classifier.scores(images)
            return (probabilities,) if embeddings is None else (probabilities, embeddings)

        def observe(batch: BatchRun) -> None:
            BATCH_IMAGES.labels(*labels).observe(batch.images)

        options = self.options
        batcher = MicroBatcher(
            run, options.max_batch_size, options.max_batch_delay_ms, observe, options.parallel_runs
        )
        device = compute_device(self.device)
        return Loaded(archive, classifier, batcher, device, archive.decoding_digest())

    def start(self) -> None:
        # kserve's Model.start marks every model ready; ready here means loaded.
        self.ready = self.arms is not None

    def serving(self) -> Arms:
        if self.arms is None:
            raise ModelNotReady(self.name, "The model is not loaded.")
        return self.arms

    def get_input_types(self) -> list[dict[str, Any]]:
        return metadata.input_types(self.archive)

    def get_output_types(self) -> list[dict[str, Any]]:
        return metadata.output_types(self.archive)

    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata of the champion, with its version and its preprocessing
        (`metadata.py`)."""
        return metadata.model_metadata(self.name, self.archive)

    async def preprocess(self, payload: object, headers: dict[str, str] | None = None) -> Received:
        started, arms = time.perf_counter(), self.serving()
        # Our own id: a client's x-request-id or V2 id may be an accession number.
        request_id = uuid.uuid4().hex
        arm = arms.answering(request_id)
        # Announced while it decodes: a batch forming on the arm that answers may wait for it.
        # The announcement ends as `predict` queues it, in the same step of the event loop.
        with arms.loaded(arm).batcher.expecting():
            batch = await self.decoded(payload, arms.champion.archive)
        shared = arms.challenger is None or arms.challenger.decoding == arms.champion.decoding
        kept = None if shared else payload
        return Received(batch, arms, arm, request_id, started, time.perf_counter(), kept)

    async def decoded(self, payload: object, archive: Archive) -> Batch:
        loop = asyncio.get_running_loop()
        decode = protocol.v2_batch if isinstance(payload, InferRequest) else protocol.v1_batch
        async with self.decodes.slot():
            batch: Batch = await loop.run_in_executor(
                None, decode, payload, archive, self.options.limits
            )
        return batch

    def validate(self, payload: Received) -> Received:
        # kserve's own check looks for "instances"/"inputs" keys in a dict; preprocess has
        # already checked the request and decoded it.
        return payload

    async def predict(
        self,
        payload: Received,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Scored:
        if payload.arm is Arm.CHAMPION:
            return await self.scored(payload, Arm.CHAMPION)
        try:
            return await self.scored(payload, Arm.CHALLENGER)
        except Exception as exc:
            # Whatever failed (its run, its own decoding), a canary tries the challenger on
            # the platform, not on the client: the champion answers.
            challenger = payload.arms.loaded(Arm.CHALLENGER)
            CANARY_FALLBACKS.labels(self.name, challenger.version).inc()
            log.warning(
                "the canary's challenger failed: the champion answers",
                # The type only: an exception's message may quote what it was given.
                extra={"model_version": challenger.version, "error": type(exc).__name__},
            )
            return replace(await self.scored(payload, Arm.CHAMPION), challenger_failed=True)

    async def scored(self, received: Received, arm: Arm) -> Scored:
        loaded = received.arms.loaded(arm)
        batch = await self.images_for(received, loaded)
        attributes: dict[str, str | int] = {
            "fetalmlops.model": self.name,
            "fetalmlops.model_version": loaded.version,
            "fetalmlops.arm": arm.value,
            "fetalmlops.images": len(batch.images),
            "fetalmlops.compute_device": loaded.compute_device,
        }
        with tracer.start_as_current_span("classify planes", attributes=attributes):
            outputs = await loaded.batcher.submit(batch.tensor)
        embeddings = outputs[1] if len(outputs) > 1 else None
        return Scored(received, loaded, arm, batch, outputs[0], embeddings)

    async def images_for(self, received: Received, loaded: Loaded) -> Batch:
        """The request as ``loaded`` decodes it: the champion's decoding when they agree."""
        if loaded.decoding == received.arms.champion.decoding:
            return received.batch
        if received.payload is None:
            raise LookupError("the request was not kept for a second decoding")
        return await self.decoded(received.payload, loaded.archive)

    async def postprocess(
        self,
        result: Scored | dict[str, Any],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if not isinstance(result, Scored):
            return result  # an explanation, answered as `explain` shaped it
        received, loaded = result.received, result.loaded
        request, arm = received.batch.request, result.arm
        ids = [prediction_id(received.request_id, i) for i in range(len(result.probabilities))]
        if request is None:
            answer: dict[str, Any] | InferResponse = protocol.v1_response(
                result.probabilities, loaded.classifier, self.name, loaded.version, ids, arm
            )
        else:
            answer = protocol.v2_response(
                request, result.probabilities, loaded.classifier, self.name, loaded.version, ids,
                arm,
            )  # fmt: skip
        seconds = time.perf_counter() - received.started
        REQUEST_SECONDS.labels(self.name, loaded.version, "predict").observe(seconds)
        self.report(result, seconds)
        shadow = received.arms.shadow
        if shadow is not None and not self.shadows.start(self.shadow(received)):
            SHADOW_RUNS.labels(self.name, shadow.version, "skipped").inc()
        return answer

    async def shadow(self, received: Received) -> None:
        """The challenger's scores of a request the champion answered, published as shadow
        events. Never raises: the answer has left, and a shadow's failure is only counted."""
        challenger = received.arms.loaded(Arm.SHADOW)
        begun = time.perf_counter()
        try:
            scored = await self.scored(received, Arm.SHADOW)
            # What the challenger would have taken to answer: decoding and its own run.
            seconds = received.decoded - received.started + time.perf_counter() - begun
            REQUEST_SECONDS.labels(self.name, challenger.version, "shadow").observe(seconds)
            self.report(scored, seconds)
        except Exception as exc:
            SHADOW_RUNS.labels(self.name, challenger.version, "failed").inc()
            log.warning(
                "a shadow scoring failed",
                # The type only: an exception's message may quote what it was given.
                extra={"model_version": challenger.version, "error": type(exc).__name__},
            )
            return
        SHADOW_RUNS.labels(self.name, challenger.version, "scored").inc()

    def report(self, result: Scored, seconds: float) -> None:
        received, loaded = result.received, result.loaded
        classes = loaded.classifier.classes
        for row in result.probabilities:
            plane = classes[int(row.argmax())]
            PREDICTIONS.labels(self.name, loaded.version, plane, result.arm.value).inc()
        if self.options.publish is None:
            return
        served = Served(
            request_id=received.request_id,
            model_name=loaded.archive.model_name,
            model_version=version_number(loaded.version),
            classes=classes,
            compute_device=loaded.compute_device,
            latency_ms=seconds * 1000,
            arm=result.arm,
            challenger_failed=result.challenger_failed,
        )
        embeddings = result.embeddings
        events = [
            prediction_event(
                served,
                index,
                Observation(
                    probabilities=result.probabilities[index].tolist(),
                    embedding=None if embeddings is None else embeddings[index].numpy(),
                    thumbnail=image.thumbnail,
                    rows=image.rows,
                    columns=image.columns,
                    scanner=image.scanner,
                ),
            )
            for index, image in enumerate(result.batch.images)
        ]
        self.options.publish(events)

    async def explain(
        self, payload: Received, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """V1 ``:explain``: a Grad-CAM or SHAP heatmap per image (``fetalmlops.inference.explain``).

        Always the champion's, whatever the rollout: an explanation is read beside the answers
        clinicians rely on, and a canary's challenger is an experiment that answers only
        ``:predict``. SHAP samples fewer where needed to answer within ``explain_timeout_s``.
        """
        version = payload.arms.champion
        loop = asyncio.get_running_loop()
        request = explanation_request(payload.batch, version.archive)
        answers = await loop.run_in_executor(
            None,
            explanations,
            request,
            version.classifier,
            version.archive.transform,
            self.options.explain_timeout_s,
        )
        REQUEST_SECONDS.labels(self.name, version.version, "explain").observe(
            time.perf_counter() - payload.started
        )
        named = {
            "model_name": self.name,
            "model_version": version.version,
            "arm": Arm.CHAMPION.value,
        }
        return {"explanations": [{**answer, **named} for answer in answers]}


def compute_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
