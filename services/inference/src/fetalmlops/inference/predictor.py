"""The KServe predictor: one model, answered over KServe's V1 and V2 protocols.

KServe's ``Model.__call__`` runs ``preprocess`` → ``validate`` → ``predict`` (or ``explain``)
→ ``postprocess`` and times each stage into its Prometheus histograms. Here ``preprocess``
decodes the request for the version being served (refusing client mistakes with `Refused`,
HTTP 400 or 413), at most ``max_concurrent_decodes`` requests at a time since each decode
holds a full-size picture, ``predict`` hands the images to that version's micro-batcher,
and ``postprocess`` shapes the answer for the protocol the request came in, then queues one
PHI-free `fetal.predictions` event per image. KServe calls these on its event loop, so
decoding and the model run in the loop's executor: probes keep answering during a batch.

A promotion replaces the served version with ``switch`` (called from the reload thread): a
request holds the version it was decoded for until it is answered, so a switch drops nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from kserve import Model
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse
from opentelemetry import trace

from fetalmlops.inference import metadata, protocol
from fetalmlops.inference.archive import Archive, Classifier
from fetalmlops.inference.batching import BatchRun, MicroBatcher
from fetalmlops.inference.events import Observation, Served, prediction_event, prediction_id
from fetalmlops.inference.explain import explanation_request, explanations
from fetalmlops.inference.limits import ImageLimits
from fetalmlops.inference.metrics import (
    BATCH_IMAGES,
    PREDICTIONS,
    REQUEST_SECONDS,
    SERVED_VERSION,
)
from fetalmlops.inference.protocol import Batch
from fetalmlops.v1 import predictions_pb2

Publish = Callable[[Sequence[predictions_pb2.PredictionMade]], None]
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


@dataclass(frozen=True)
class Loaded:
    """A version ready to answer: its archive, its model, and the batcher in front of it."""

    archive: Archive
    classifier: Classifier
    batcher: MicroBatcher
    compute_device: str

    @property
    def version(self) -> str:
        return self.archive.model_version


@dataclass(frozen=True)
class Received:
    """A request decoded for one version; it is answered by that version whatever happens."""

    batch: Batch
    version: Loaded
    request_id: str
    started: float  # time.perf_counter() when the request reached preprocess


@dataclass(frozen=True)
class Scored:
    received: Received
    probabilities: torch.Tensor
    embeddings: torch.Tensor | None


class PlanePredictor(Model):  # type: ignore[misc]  # kserve ships no type information
    name: str
    ready: bool

    def __init__(
        self,
        archive: Archive,
        name: str | None = None,
        device: torch.device | None = None,
        options: Options | None = None,
    ) -> None:
        super().__init__(name or archive.model_name)
        self.pending = archive  # what `load` loads
        self.device = device or torch.device("cpu")
        self.options = options or Options()
        self.current: Loaded | None = None
        self.decodes = DecodeSlots(self.options.max_concurrent_decodes)

    @property
    def archive(self) -> Archive:
        """The version served, or about to be."""
        return self.current.archive if self.current is not None else self.pending

    @property
    def model_version(self) -> str:
        return self.archive.model_version

    def load(self) -> bool:
        """Loads the TorchScript model; ready only once it has."""
        self.current = self.loaded_version(self.pending)
        self.ready = True
        SERVED_VERSION.labels(self.name).set(version_number(self.current.version))
        return True

    def switch(self, archive: Archive) -> None:
        """Serves ``archive`` from the next request on; blocks while it loads, which is why
        the reload thread calls it. One assignment switches: no lock, no request waits."""
        self.current = self.loaded_version(archive)
        SERVED_VERSION.labels(self.name).set(version_number(self.current.version))

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
        return Loaded(archive, classifier, batcher, compute_device(self.device))

    def start(self) -> None:
        # kserve's Model.start marks every model ready; ready here means loaded.
        self.ready = self.current is not None

    def serving(self) -> Loaded:
        if self.current is None:
            raise ModelNotReady(self.name, "The model is not loaded.")
        return self.current

    def get_input_types(self) -> list[dict[str, Any]]:
        return metadata.input_types(self.archive)

    def get_output_types(self) -> list[dict[str, Any]]:
        return metadata.output_types(self.archive)

    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata, with its version and its preprocessing (`metadata.py`)."""
        return metadata.model_metadata(self.name, self.archive)

    async def preprocess(self, payload: object, headers: dict[str, str] | None = None) -> Received:
        started, version = time.perf_counter(), self.serving()
        loop = asyncio.get_running_loop()
        decode = protocol.v2_batch if isinstance(payload, InferRequest) else protocol.v1_batch
        # Announced while it decodes: a batch forming now may wait for it. The announcement
        # ends as `predict` queues it, in the same step of the event loop.
        with version.batcher.expecting():
            async with self.decodes.slot():
                batch = await loop.run_in_executor(
                    None, decode, payload, version.archive, self.options.limits
                )
        # Our own id: a client's x-request-id or V2 id may be an accession number.
        return Received(batch, version, uuid.uuid4().hex, started)

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
        version = payload.version
        attributes: dict[str, str | int] = {
            "fetalmlops.model": self.name,
            "fetalmlops.model_version": version.version,
            "fetalmlops.images": len(payload.batch.images),
            "fetalmlops.compute_device": version.compute_device,
        }
        with tracer.start_as_current_span("classify planes", attributes=attributes):
            outputs = await version.batcher.submit(payload.batch.tensor)
        return Scored(payload, outputs[0], outputs[1] if len(outputs) > 1 else None)

    async def postprocess(
        self,
        result: Scored | dict[str, Any],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if not isinstance(result, Scored):
            return result  # an explanation, answered as `explain` shaped it
        received = result.received
        version, request = received.version, received.batch.request
        ids = [prediction_id(received.request_id, i) for i in range(len(result.probabilities))]
        if request is None:
            answer: dict[str, Any] | InferResponse = protocol.v1_response(
                result.probabilities, version.classifier, self.name, version.version, ids
            )
        else:
            answer = protocol.v2_response(
                request, result.probabilities, version.classifier, self.name, version.version, ids
            )
        seconds = time.perf_counter() - received.started
        REQUEST_SECONDS.labels(self.name, version.version, "predict").observe(seconds)
        self.report(result, seconds)
        return answer

    def report(self, result: Scored, seconds: float) -> None:
        received = result.received
        version = received.version
        classes = version.classifier.classes
        for row in result.probabilities:
            PREDICTIONS.labels(self.name, version.version, classes[int(row.argmax())]).inc()
        if self.options.publish is None:
            return
        served = Served(
            request_id=received.request_id,
            model_name=version.archive.model_name,
            model_version=version_number(version.version),
            classes=classes,
            compute_device=version.compute_device,
            latency_ms=seconds * 1000,
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
            for index, image in enumerate(received.batch.images)
        ]
        self.options.publish(events)

    async def explain(
        self, payload: Received, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """V1 ``:explain``: a Grad-CAM or SHAP heatmap per image (``fetalmlops.inference.explain``).

        SHAP samples fewer where needed to answer within ``explain_timeout_s``.
        """
        version = payload.version
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
        return {
            "explanations": [
                {**answer, "model_name": self.name, "model_version": version.version}
                for answer in answers
            ]
        }


class DecodeSlots:
    """At most ``slots`` decodes at once, on whichever event loop serves the requests.

    A semaphore belongs to the loop it first waited on; tests and a restarted server run
    requests on new loops, so a new loop gets a new semaphore (as `MicroBatcher._bind` does).
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(slots)

    def slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.slots)
        return self._semaphore


def version_number(version: str) -> int:
    """The registry's integer version; 0 for an archive versioned by hand ("1.0")."""
    try:
        return int(version)
    except ValueError:
        return 0


def compute_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
