"""How the inference server refuses a request: a status, a reason, and nothing of the request.

The one place that maps errors to HTTP answers. A client mistake found by this service is
raised as `Refused` (or a subclass naming its status), its reason written not to quote the
request: inputs are named by their index or by the names the model declares, limits by their
value, never by what the client sent. Every other error that reaches an answer is answered
with a fixed sentence chosen by its type, because its message may quote the request:

* KServe's own ``InvalidInput`` echoes input and output names and library messages (its
  ``Failed to encode "b'...'"`` held a whole DICOM file, patient name included);
* ``ModelNotFound`` and ``ModelNotReady`` echo the model name of the path;
* FastAPI's validation errors carry the ``input`` they refused (`fetalmlops.common.refusals`
  keeps only location and kind);
* anything unexpected is a 500 that names nothing (`Contained`). Its log record names its type
  (`fetalmlops.common.telemetry.logs` writes tracebacks without messages), and it never reaches
  the request's span, where OpenTelemetry's FastAPI instrumentation would record its message.

Answers have KServe's and Triton's shape, ``{"error": "<reason>"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetalmlops.common.refusals import described
from fetalmlops.inference.guard import respond

log = logging.getLogger(__name__)

INTERNAL = "internal error"
JSON_LENGTH_HEADER = "Inference-Header-Content-Length"


class Refused(InvalidInput):  # type: ignore[misc]  # kserve ships no type information
    """A client mistake; ``reason`` quotes nothing of the request."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class TooLarge(Refused):
    """Over a size limit: bytes, pixels, frames or images."""

    status = 413


class NotServed(Refused):
    """A model or a model version this server does not serve."""

    status = 404


# Errors KServe raises with a message that may quote the request, answered by their type.
FIXED: dict[type[Exception], tuple[int, str]] = {
    ModelNotReady: (503, "the model is not loaded yet"),
    ServerNotReady: (503, "the server is not ready"),
    ServerNotLive: (503, "the server is not live"),
    NotImplementedError: (501, "not implemented by this server"),
    UnsupportedProtocol: (501, "the protocol is not supported by this server"),
    InferenceError: (500, INTERNAL),
}
# KServe's own InvalidInput: what it means depends on where KServe raised it, not on its text.
MALFORMED = "the request is malformed (KServe could not decode it)"


def answer(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def invalid_input(exc: Exception) -> JSONResponse:
    if isinstance(exc, Refused):
        log.debug("request refused", extra={"status": exc.status, "reason": exc.reason})
        return answer(exc.status, exc.reason)
    log.debug("request refused", extra={"status": 400, "error": type(exc).__name__})
    return answer(400, MALFORMED)


def not_found(served: Callable[[], Sequence[str]]) -> Callable[[Exception], JSONResponse]:
    def handle(exc: Exception) -> JSONResponse:
        names = ", ".join(sorted(served())) or "none"
        return answer(404, f"no model of that name is served here (this server serves: {names})")

    return handle


def fixed(exc: Exception) -> JSONResponse:
    status, reason = next(v for k, v in FIXED.items() if isinstance(exc, k))
    if status == 500:
        log.error("request failed", extra={"error": type(exc).__name__}, exc_info=exc)
    else:
        # A state, not a failure: a model awaiting its first version answers 503 to every
        # request until it is promoted, and an error line each would bury the real ones.
        log.debug("request refused", extra={"status": status, "error": type(exc).__name__})
    return answer(status, reason)


def not_a_request(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if any(error.get("type") == "json_invalid" for error in errors):
        if JSON_LENGTH_HEADER.lower() in request.headers:
            reason = (
                f"a binary tensor request ({JSON_LENGTH_HEADER}) is not JSON: send it as "
                "application/octet-stream"
            )
        else:
            reason = "the body is not JSON"
        return answer(400, reason)
    return answer(400, schema_mistakes(errors))


def schema_mistakes(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's errors as where and what kind, none of the values (`described`)."""
    parts = []
    for error in errors[:5]:
        detail = described(error)
        where = ".".join(str(part) for part in detail["loc"])
        parts.append(f"{where}: {detail['msg']}")
    return f"the request does not follow the protocol: {'; '.join(parts)}"


Handler = Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]


def handler(respond: Callable[[Exception], JSONResponse]) -> Handler:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return respond(exc)

    return handle


def install(app: FastAPI, served: Callable[[], Sequence[str]]) -> None:
    """This module's answers in place of KServe's exception handlers; ``served`` lists the
    names of the models served, the only names a 404 may give."""

    async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
        return not_a_request(request, exc)

    app.add_exception_handler(InvalidInput, handler(invalid_input))
    app.add_exception_handler(ModelNotFound, handler(not_found(served)))
    app.add_exception_handler(RequestValidationError, request_invalid)
    for kind in FIXED:
        app.add_exception_handler(kind, handler(fixed))


class Contained:
    """Answers an exception nothing else answered with a 500 that names nothing.

    Pure ASGI and inside the FastAPI instrumentation's exception recorder: what is caught here
    never becomes a span event (whose ``exception.message`` would be the library's message),
    nor uvicorn's "Exception in ASGI application" traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.error("request failed", extra={"error": type(exc).__name__}, exc_info=exc)
            if started:
                return  # the status is gone; the connection ends with what was sent
            await respond(send, 500, INTERNAL)
