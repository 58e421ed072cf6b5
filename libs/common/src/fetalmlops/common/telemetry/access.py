"""Access logs and request spans that name the route, never the request.

A URL is request content: a DICOMweb query carries ``PatientName=…``, a path carries a Study
Instance UID, and ``Host`` or ``User-Agent`` can be anything a client sends. uvicorn's access
log writes the raw request line and OpenTelemetry's ASGI instrumentation puts ``http.target``
and ``http.url`` on every server span, so both are replaced here:

* ``AccessLog``, a pure ASGI middleware, logs one line per request on ``fetalmlops.access``:
  method (one of the standard ones, else ``OTHER``), route template (``/dicomweb/studies/
  {study}``, or ``unmatched``), status and duration, and counts the answer under the same
  labels (``fetalmlops_http_responses_total``). uvicorn's own access log is turned off.
* ``scrub_request_span``, the instrumentation's ``server_request_hook``, overwrites every
  attribute that holds the raw URL or a client-chosen header with the route template or a
  fixed placeholder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry.trace import Span
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetalmlops.common.telemetry.metrics import HTTP_RESPONSES

log = logging.getLogger("fetalmlops.access")

# RFC 9110 §9 and RFC 5789: any other token a client sends as a method is logged as OTHER.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
UNMATCHED = "unmatched"
REDACTED = "redacted"

# Span attributes, old and new semantic conventions, that carry the raw target or URL …
_TARGET_ATTRIBUTES = ("http.target", "url.path")
_URL_ATTRIBUTES = ("http.url", "url.full", "url.query")
# … or a value the client chose (Host, User-Agent).
_CLIENT_ATTRIBUTES = (
    "http.host",
    "http.server_name",
    "net.host.name",
    "server.address",
    "http.user_agent",
    "user_agent.original",
)


def method_of(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in METHODS else "OTHER"


def route_template(scope: Scope) -> str:
    """The template of the route ``scope`` was (or will be) routed to: its path, never the URL.

    After routing, Starlette leaves the route in the scope; before it (a span's start), the
    application's routes are matched the way its router will match them.
    """
    route = scope.get("route")
    if route is not None and isinstance(getattr(route, "path", None), str):
        return str(route.path)
    app = scope.get("app")
    return _matching(getattr(app, "routes", ()), scope, "") or UNMATCHED


def _matching(routes: Iterable[BaseRoute], scope: Scope, prefix: str) -> str | None:
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        path = prefix + str(getattr(route, "path", ""))
        if match is Match.FULL:
            if isinstance(route, Mount):
                return _matching(route.routes, {**scope, **child}, path) or path
            return path
        if match is Match.PARTIAL and partial is None:
            partial = path  # the path matched, the method did not: answered 405
    return partial


def scrub_request_span(span: Span, scope: dict[str, Any]) -> None:
    """``server_request_hook`` for OpenTelemetry's FastAPI/ASGI instrumentation."""
    if not span.is_recording():
        return
    template = route_template(scope)
    for name in _TARGET_ATTRIBUTES:
        span.set_attribute(name, template)
    for name in (*_URL_ATTRIBUTES, *_CLIENT_ATTRIBUTES):
        span.set_attribute(name, REDACTED)


class AccessLog:
    """One PHI-free log line per HTTP request (method, route template, status, duration), and
    the answer counted by method, route template and status."""

    def __init__(self, app: ASGIApp, quiet_routes: Iterable[str] = ()) -> None:
        self.app = app
        # Probes and scrapes every few seconds would drown the requests people look for.
        self.quiet_routes = frozenset(quiet_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an application that raised answered 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = route_template(scope)
            HTTP_RESPONSES.labels(method_of(scope), route, str(status)).inc()
            if route not in self.quiet_routes or status >= 400:
                log.info(
                    "request",
                    extra={
                        "method": method_of(scope),
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
