"""KServe's ModelServer, bound where our settings say, with the platform's health routes.

What KServe serves (REST only here; gRPC is off): ``/v1/models/<name>[:predict|:explain]``,
``/v2/models/<name>[/ready|/infer]``, ``/v2/health/live|ready``, ``/metrics`` (its latency
histograms and ours) and the V2 repository extension. Beside them, every FetalMLOps service's
``/healthz`` and ``/readyz``: KServe's ``/v2/health/ready`` says ready whether or not a model
is loaded, while ``/readyz`` says whether this process can answer a prediction.

What this server changes in KServe, each where KServe answers a client's mistake with a server
error, says what it does not do, or repeats the request:

* request bodies are decoded by `dataplane.py` (binary tensors by `binary.py`), and the routes
  KServe leaves unimplemented are answered by `routes.py`;
* KServe's exception handlers, which answer and log each exception's message, are replaced by
  `refusals.py`; its timing middleware, which logs each request's path, and its per-request
  latency line, which logs the client's ``x-request-id``, are off;
* uvicorn's access log, which writes the raw request line, is off: `AccessLog` writes the
  method, the route's template and the status; request spans carry the template too
  (`scrub_request_span`).

Around it, from the outside in: `Contained` (an unexpected error is a 500 that names nothing),
`AccessLog`, the guard (``guard.py``: bearer tokens and the request size limit; without a
token the server starts on loopback only) and `InFlight` (``admission.py``: the request bytes
held at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from kserve import ModelServer, model_server
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.rest.server import RESTServer
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from fetalmlops.common.service import ReadinessCheck, health_routes
from fetalmlops.common.telemetry.access import AccessLog, scrub_request_span
from fetalmlops.inference import refusals
from fetalmlops.inference.admission import InFlight
from fetalmlops.inference.dataplane import CheckedDataPlane
from fetalmlops.inference.guard import RequestGuard, bearer_tokens, require_token_off_loopback
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.routes import KnownModelsRepository, protocol_routes
from fetalmlops.inference.settings import InferenceSettings

log = logging.getLogger(__name__)

# Probes and scrapes every few seconds would drown the requests an SRE looks for.
QUIET_ROUTES = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")
# Pillow logs each PNG chunk's type at DEBUG: four bytes of the request.
QUIET_LOGGERS = ("PIL",)


class PlainRESTServer(RESTServer):  # type: ignore[misc]  # kserve ships no type information
    """KServe's REST server listening on ``host``, with this service's routes and refusals.

    kserve 0.21's RESTServer hard-codes ``host="0.0.0.0"`` (kserve/kserve#4558 asks for an
    option); uvicorn reads ``config.host`` only when it binds.
    """

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.config.access_log = False
        self.config.configure_logging()  # what access_log=False means to uvicorn

    def _register_endpoints(self, app: FastAPI) -> None:
        app.include_router(protocol_routes(self.dataplane, self.model_repository_extension))
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        registry = self.dataplane.model_registry
        refusals.install(app, lambda: list(registry.get_models()))

    def _add_middlewares(self, app: FastAPI) -> None:
        """None of KServe's: its TimingMiddleware logs every request's path."""


class BoundModelServer(ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """A ModelServer of one REST server on ``host``; gRPC and worker processes are not used."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        # KServe's latency line logs each request's x-request-id, the client's to write.
        super().__init__(enable_latency_logging=False, enable_grpc=False, workers=1, **kwargs)
        self.host = host
        # start() hands both to the REST server; nothing has used them yet.
        self.dataplane = CheckedDataPlane(model_registry=self.registered_models)
        self.model_repository_extension = KnownModelsRepository(self.registered_models)

    def start(self, models: list[PlanePredictor]) -> None:
        """ModelServer.start for one REST server: this one, on ``host``."""
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = PlainRESTServer(
            self.host,
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=None,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def model_ready(predictors: Sequence[PlanePredictor]) -> ReadinessCheck:
    def check() -> None:
        if not predictors:
            raise LookupError(
                "no model configured (FETALMLOPS_INFERENCE_MODEL_URI, or "
                "FETALMLOPS_INFERENCE_MODEL_NAME to await its first promoted version)"
            )
        unready = [p for p in predictors if not p.ready]
        awaiting = [p.name for p in unready if p.awaiting_first_version]
        loading = [p.name for p in unready if not p.awaiting_first_version]
        reasons = []
        if awaiting:
            reasons.append(f"waiting for its first promoted version: {', '.join(awaiting)}")
        if loading:
            reasons.append(f"not loaded: {', '.join(loading)}")
        if reasons:
            raise LookupError("; ".join(reasons))

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
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    # KServe's REST server mounts its routes on this module-level app when it starts.
    app = model_server.app
    # Starlette answers a path with a slash too many by a redirect to the client's own path,
    # its Host in front: request content in an answer.
    app.router.redirect_slashes = False
    app.include_router(health_routes(readiness))
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="healthz,readyz,metrics,v2/health",
        server_request_hook=scrub_request_span,
    )
    # Added innermost first: a request meets Contained, AccessLog, the guard, then InFlight.
    app.add_middleware(
        InFlight,
        budget=settings.max_bytes_in_flight,
        max_request_bytes=settings.max_request_bytes,
        wait_s=settings.admission_timeout_s,
    )
    app.add_middleware(RequestGuard, tokens=tokens, max_request_bytes=settings.max_request_bytes)
    app.add_middleware(AccessLog, quiet_routes=QUIET_ROUTES)
    app.add_middleware(refusals.Contained)
    server = BoundModelServer(host, http_port=port)
    # Models in start()'s list must be ready, an empty list is accepted: registered first,
    # an unready predictor is served (503 until loaded) rather than refused.
    for predictor in predictors:
        server.register_model(predictor)
    server.start([p for p in predictors if p.ready])
