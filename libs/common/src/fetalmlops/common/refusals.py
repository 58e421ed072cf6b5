"""How every HTTP service refuses a request without quoting it.

FastAPI's own 422 answer lists each validation error with its ``input`` (the value sent), and
some of pydantic's messages are built from the input too (a parser's ``error``, a union's
``tag``). Sent back, logged by a proxy or kept in a client's error report, that is the
request's content — possibly a patient's name. Here an error says where (the location) and
what kind of mistake (pydantic's type and, where its message is built from the schema alone,
the message), never what was sent. An unexpected failure is a 500 that says nothing of the
request either; its traceback goes to the log, by exception type only (``telemetry.logs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Context keys of pydantic-core's error messages that carry (part of) the input; every other
# key holds what the schema declares (limits, patterns, expected values).
INPUT_CONTEXT = frozenset({"error", "tag", "discriminator"})
# Error types whose last location element is a key the client chose.
CLIENT_KEYS = frozenset({"extra_forbidden"})
SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
CLIENT_KEY = "<key>"


def described(error: Mapping[str, Any]) -> dict[str, Any]:
    """One validation error as ``{"loc", "type", "msg"}``, nothing in it taken from the input."""
    kind = str(error.get("type", "invalid"))
    location = [_location_part(part) for part in error.get("loc", ())]
    if kind in CLIENT_KEYS and location:
        location[-1] = CLIENT_KEY
    context = error.get("ctx") or {}
    quotes_input = bool(INPUT_CONTEXT & set(context))
    message = "invalid value" if quotes_input else str(error.get("msg", "invalid value"))
    return {"loc": location, "type": kind, "msg": message}


def _location_part(part: object) -> str | int:
    # A location names the declared parameter or an index; a key from a client-typed mapping
    # (dict fields) is client content like any other.
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    text = str(part)
    return text if text.isidentifier() and len(text) <= 64 else CLIENT_KEY


def validation_detail(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [described(error) for error in errors]


async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": validation_detail(errors)}, status_code=422)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after answering, so the server still logs the traceback.
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(Exception, unexpected)
