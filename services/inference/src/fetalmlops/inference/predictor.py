"""The KServe predictor: one model version, answered over KServe's V1 and V2 protocols.

KServe's ``Model.__call__`` runs ``preprocess`` → ``validate`` → ``predict`` → ``postprocess``
and times each stage into its Prometheus histograms. Here ``preprocess`` turns the request into
preprocessed images (refusing client mistakes with ``InvalidInput``, HTTP 400), ``predict``
runs the archive's classifier, and ``postprocess`` shapes the answer for the protocol the
request came in. KServe calls these on its event loop, so decoding and the model run in the
loop's executor: health and readiness probes keep answering while a batch is computed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import torch
from kserve import Model
from kserve.errors import ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse

from fetalmlops.inference import protocol
from fetalmlops.inference.archive import Archive, Classifier
from fetalmlops.inference.protocol import Batch


@dataclass(frozen=True)
class Scored:
    batch: Batch
    probabilities: torch.Tensor


class PlanePredictor(Model):  # type: ignore[misc]  # kserve ships no type information
    name: str
    ready: bool
    archive: Archive
    device: torch.device
    classifier: Classifier | None

    def __init__(
        self,
        archive: Archive,
        name: str | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(name or archive.model_name)
        self.archive = archive
        self.device = device or torch.device("cpu")
        self.classifier: Classifier | None = None

    @property
    def model_version(self) -> str:
        return self.archive.model_version

    def load(self) -> bool:
        """Loads the TorchScript model; ready only once it has."""
        self.classifier = self.archive.load(self.device)
        self.ready = True
        return True

    def start(self) -> None:
        # kserve's Model.start marks every model ready; ready here means loaded.
        self.ready = self.classifier is not None

    def loaded(self) -> Classifier:
        if self.classifier is None:
            raise ModelNotReady(self.name, "The model is not loaded.")
        return self.classifier

    def get_input_types(self) -> list[dict[str, Any]]:
        return protocol.input_types(self.archive)

    def get_output_types(self) -> list[dict[str, Any]]:
        return protocol.output_types(self.archive)

    async def preprocess(self, payload: object, headers: dict[str, str] | None = None) -> Batch:
        loop = asyncio.get_running_loop()
        if isinstance(payload, InferRequest):
            return await loop.run_in_executor(None, protocol.v2_batch, payload, self.archive)
        return await loop.run_in_executor(None, protocol.v1_batch, payload, self.archive)

    def validate(self, payload: Batch) -> Batch:
        # kserve's own check looks for "instances"/"inputs" keys in a dict; preprocess has
        # already checked the request and turned it into a Batch.
        return payload

    async def predict(
        self,
        payload: Batch,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Scored:
        classifier = self.loaded()
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(None, classifier.probabilities, payload.images)
        return Scored(payload, probabilities)

    async def postprocess(
        self,
        result: Scored,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        classifier = self.loaded()
        request = result.batch.request
        if request is None:
            return protocol.v1_response(
                result.probabilities, classifier, self.name, self.model_version
            )
        return protocol.v2_response(
            request, result.probabilities, classifier, self.name, self.model_version
        )
