"""KServe's ModelServer, bound where our settings say, with the platform's health routes.

What KServe serves (REST only here; gRPC is off): ``/v1/models/<name>[:predict|:explain]``,
``/v2/models/<name>[/ready|/infer]``, ``/v2/health/live|ready``, ``/metrics`` (its latency
histograms and ours) and the V2 repository extension. Beside them, every FetalMLOps service's
``/healthz`` and ``/readyz``: KServe's ``/v2/health/ready`` says ready whether or not a model
is loaded, while ``/readyz`` says whether this process can answer a prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kserve import ModelServer, model_server
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from fetalmlops.common.service import ReadinessCheck, health_routes
from fetalmlops.inference.predictor import PlanePredictor


class BoundModelServer(ModelServer):  # type: ignore[misc]  # kserve ships no type information
    """A ModelServer listening on ``host`` instead of every interface.

    kserve 0.21's RESTServer hard-codes ``host="0.0.0.0"`` (kserve/kserve#4558 asks for an
    option). ``ModelServer.start`` builds the REST server, then calls ``setup_event_loop``,
    then serves: uvicorn reads ``config.host`` only when it binds, so this hook sets it.
    """

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host

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
    host: str,
    port: int,
    readiness: Mapping[str, ReadinessCheck],
) -> None:
    """Serves until SIGTERM or SIGINT. Logging and tracing are configured by the caller."""
    # KServe's REST server mounts its routes on this module-level app when it starts.
    app = model_server.app
    app.include_router(health_routes(readiness))
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics,v2/health")
    server = BoundModelServer(host, http_port=port, enable_grpc=False, workers=1)
    # Models in start()'s list must be ready, an empty list is accepted: registered first,
    # an unready predictor is served (503 until loaded) rather than refused.
    for predictor in predictors:
        server.register_model(predictor)
    server.start([p for p in predictors if p.ready])
