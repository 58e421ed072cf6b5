"""KServe's ModelServer, bound where our settings say, with the platform's health routes.

What KServe serves (REST only here; gRPC is off): ``/v1/models/<name>[:predict|:explain]``,
``/v2/models/<name>[/ready|/infer]``, ``/v2/health/live|ready``, ``/metrics`` (its latency
histograms and ours) and the V2 repository extension. Beside them, every FetalMLOps service's
``/healthz`` and ``/readyz``: KServe's ``/v2/health/ready`` says ready whether or not a model
is loaded, while ``/readyz`` says whether this process can answer a prediction.

Around it, the guard (``guard.py``): bearer tokens and a request size limit. Without a token
the server starts on loopback only. Two KServe parts are replaced where they answer a client's
mistake with a server error: the DataPlane's decoding of binary tensor requests (500 → 400)
and the repository extension's ``load`` of a model it does not know (503 → 404).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from kserve import ModelServer, model_server
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput, ModelNotFound
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from fetalmlops.common.service import ReadinessCheck, health_routes
from fetalmlops.inference.guard import (
    RequestGuard,
    bearer_tokens,
    binary_request_mistake,
    require_token_off_loopback,
)
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.settings import InferenceSettings

log = logging.getLogger(__name__)


class CheckedDataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """KServe's DataPlane, answering a malformed binary tensor request with 400, not 500."""

    def decode_inference_request(
        self, body: object, headers: dict[str, str], model_name: str
    ) -> InferRequest:
        if not isinstance(body, bytes):
            return super().decode_inference_request(body, headers, model_name)
        mistake = binary_request_mistake(body, headers.get(INFERENCE_CONTENT_LENGTH_HEADER))
        if mistake is not None:
            raise InvalidInput(mistake)
        try:
            return super().decode_inference_request(body, headers, model_name)
        except InvalidInput:
            raise
        except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
            # Nothing but the request is decoded here: whatever fails, the request is at fault.
            raise InvalidInput(f"malformed binary tensor request: {exc}") from None


class KnownModelsRepository(ModelRepositoryExtension):  # type: ignore[misc]
    """The V2 repository extension; ``load`` of a name never registered is 404, not 503."""

    async def load(self, model_name: str) -> None:
        if self._model_registry.get_model(model_name) is None:
            raise ModelNotFound(model_name)
        await super().load(model_name)


class BoundModelServer(ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """A ModelServer listening on ``host`` instead of every interface.

    kserve 0.21's RESTServer hard-codes ``host="0.0.0.0"`` (kserve/kserve#4558 asks for an
    option). ``ModelServer.start`` builds the REST server, then calls ``setup_event_loop``,
    then serves: uvicorn reads ``config.host`` only when it binds, so this hook sets it.
    """

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        # start() hands both to the REST server; nothing has used them yet.
        self.dataplane = CheckedDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = KnownModelsRepository(self.registered_models)

    def setup_event_loop(self) -> None:
        rest = getattr(self, "_rest_server", None)
        if rest is None:
            raise RuntimeError(
                "this kserve version builds no single-process REST server before its event "
                f"loop; cannot bind {self.host} (check BoundModelServer against kserve)"
            )
        rest.config.host = self.host
        super().setup_event_loop()


def model_ready(predictors: Sequence[PlanePredictor]) -> ReadinessCheck:
    def check() -> None:
        if not predictors:
            raise LookupError("no model configured (FETALMLOPS_INFERENCE_MODEL_URI)")
        unready = [p.name for p in predictors if not p.ready]
        if unready:
            raise LookupError(f"not loaded: {', '.join(unready)}")

    return check


def serve(
    predictors: Sequence[PlanePredictor],
    settings: InferenceSettings,
    host: str,
    port: int,
    readiness: Mapping[str, ReadinessCheck],
) -> None:
    """Serves until SIGTERM or SIGINT. Logging and tracing are configured by the caller.

    Raises ServeRefused, before serving anything, when the tokens file cannot be read or when
    no token is configured and ``host`` is not loopback.
    """
    tokens = bearer_tokens(settings)
    require_token_off_loopback(host, tokens)
    if not tokens:
        log.warning(
            "no bearer token configured: the server is unauthenticated, on loopback only",
            extra={"host": host},
        )
    # KServe's REST server mounts its routes on this module-level app when it starts.
    app = model_server.app
    app.include_router(health_routes(readiness))
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics,v2/health")
    app.add_middleware(RequestGuard, tokens=tokens, max_request_bytes=settings.max_request_bytes)
    server = BoundModelServer(host, http_port=port, enable_grpc=False, workers=1)
    # Models in start()'s list must be ready, an empty list is accepted: registered first,
    # an unready predictor is served (503 until loaded) rather than refused.
    for predictor in predictors:
        server.register_model(predictor)
    server.start([p for p in predictors if p.ready])
