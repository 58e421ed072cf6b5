"""The imperative shell every service shares: HTTP health, metrics, consumers, clean shutdown.

A service's ``main`` builds its settings, clients and handlers, then hands them to ``run``:
``/healthz`` (liveness), ``/readyz`` (its dependencies answer), ``/metrics`` (Prometheus) and
OpenAPI docs are served by uvicorn; each consumer runs the shared loop in a thread, and SIGTERM
stops both — consumers finish the message in hand and leave their group without committing more.
SIGHUP stops the same way and then runs the process's own command line again in its place (same
pid): the code is read anew, which is how Tilt's live update reloads sources it synced into a
running container.
Access logs and request spans name the route, never the URL, and refusals never quote the
request (``telemetry.access``, ``refusals``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

import uvicorn
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from fetalmlops.common import refusals
from fetalmlops.common.bus import Bus, Consumer, consume
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.common.telemetry.access import AccessLog, scrub_request_span

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]
"""Raises when a dependency is not usable; the message is shown on ``/readyz``."""


class Server(Protocol):
    """A listener beside the HTTP app (e.g. a DICOM SCP) that runs in its own threads."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Service:
    settings: Settings
    app: FastAPI
    bus: Bus | None = None
    consumers: Sequence[Consumer] = field(default_factory=list)
    servers: Sequence[Server] = field(default_factory=list)


def buckets_ready(store: ObjectStore, buckets: Sequence[str]) -> ReadinessCheck:
    def check() -> None:
        missing = [b for b in buckets if not store.bucket_exists(b)]
        if missing:
            raise LookupError(f"missing buckets: {', '.join(missing)}")

    return check


def database_ready(engine: Engine) -> ReadinessCheck:
    def check() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return check


def health_routes(readiness: Mapping[str, ReadinessCheck]) -> APIRouter:
    """``/healthz`` (the process answers) and ``/readyz`` (every check passes, or 503 naming
    the ones that fail), the same on every service, KServe's predictor included."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    def readyz() -> JSONResponse:
        failures: dict[str, str] = {}
        for name, check in readiness.items():
            try:
                check()
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        body = {"status": "unready" if failures else "ready", "failures": failures}
        return JSONResponse(body, status_code=503 if failures else 200)

    return router


QUIET_ROUTES = ("/healthz", "/readyz", "/metrics")


def create_app(title: str, readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    app = FastAPI(title=title)
    app.include_router(health_routes(readiness))
    refusals.install(app)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # Spans for every request, continuing the caller's W3C traceparent, with the route's
    # template where the instrumentation would put the URL.
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz,readyz,metrics", server_request_hook=scrub_request_span
    )
    app.add_middleware(AccessLog, quiet_routes=QUIET_ROUTES)
    return app


def run(service: Service) -> None:
    """Serve until SIGTERM/SIGINT, then stop consumers and return; on SIGHUP, stop as well and
    start again from the command line (`os.execv`)."""
    settings = service.settings
    configure_logging(settings)
    provider = configure_tracing(settings)
    stop, reload = threading.Event(), threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def request_reload(signum: int, frame: FrameType | None) -> None:
        reload.set()
        signal.raise_signal(signal.SIGTERM)  # uvicorn's handler while it serves, else ours

    # Installed before uvicorn's own handlers, which re-raise the signal into these on exit.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    threads = [
        threading.Thread(target=consume_or_stop, args=(service.bus, c, stop), name=c.group)
        for c in service.consumers
        if service.bus is not None
    ]
    for thread in threads:
        thread.start()
    for listener in service.servers:
        listener.start()
    server = http_server(service)
    log.info("service starting", extra={"port": settings.http_port})
    try:
        server.run()
    finally:
        stop.set()
        for listener in service.servers:
            listener.stop()
        for thread in threads:
            thread.join()
        if service.bus is not None:
            service.bus.close()
        log.info("service stopped")
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # flushes the spans still batched for export
    if reload.is_set():
        log.info("service starting again: its code is read anew")
        # Its own command line, no shell; sockets and files close on exec (PEP 446).
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606


def http_server(service: Service) -> uvicorn.Server:
    """The service's app under uvicorn, where its settings say."""
    settings = service.settings
    return uvicorn.Server(
        uvicorn.Config(
            service.app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,  # it logs the raw request line; AccessLog logs the route
        )
    )


def consume_or_stop(bus: Bus, consumer: Consumer, stop: threading.Event) -> None:
    """`consume` until ``stop``; a consumer that fails takes the whole process down with it."""
    try:
        consume(bus, consumer, stop)
    except Exception:
        # A consumer that cannot go on must not leave a healthy-looking process behind.
        log.exception("consumer failed; stopping the service", extra={"group": consumer.group})
        stop.set()
        signal.raise_signal(signal.SIGTERM)
