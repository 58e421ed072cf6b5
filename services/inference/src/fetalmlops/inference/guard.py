"""What the inference server refuses before a request reaches KServe or the model.

* ``RequestGuard``, a pure ASGI middleware: with bearer tokens configured, every request but
  the probes and ``/metrics`` must carry ``Authorization: Bearer <token>`` with the
  ``models:predict`` scope (the kernel's `fetalmlops.common.bearer`, as every service checks
  tokens; tokens configured here grant every scope); a body over
  ``max_request_bytes`` is refused with 413, by its ``Content-Length`` before a byte is read,
  or, chunked, as soon as the count passes the limit. It is pure ASGI because Starlette's
  ``BaseHTTPMiddleware`` buffers streamed bodies, which is what the limit is there to prevent.
* ``bearer_tokens`` and ``require_token_off_loopback``: the server starts only where its
  exposure matches its configuration: without a token it answers on loopback only.
* A body sent compressed (``Content-Encoding``, which tritonclient offers) is refused with 415:
  the server does not inflate what it cannot bound before inflating it.

The V2 binary tensor extension is checked in ``binary.py``, the bytes held across requests
are bounded in ``admission.py``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fetalmlops.common.bearer import Tokens, is_loopback
from fetalmlops.inference.settings import InferenceSettings

MODELS_PREDICT = "models:predict"
# Kubernetes probes and Prometheus scrape without credentials.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"})


class ServeRefused(Exception):
    """The server will not start as configured; the message says why and what to change."""


def bearer_tokens(settings: InferenceSettings) -> tuple[str, ...]:
    """``tokens`` and the lines of ``tokens_file`` (blank lines and ``#`` comments skipped)."""
    tokens = [secret.get_secret_value() for secret in settings.tokens]
    if any(not token.strip() for token in tokens):
        raise ServeRefused("FETALMLOPS_INFERENCE_TOKENS holds an empty token")
    path = settings.tokens_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ServeRefused(f"cannot read the bearer tokens file {path}: {exc}") from None
        lines = [line.strip() for line in text.splitlines()]
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise ServeRefused(f"the bearer tokens file {path} holds no token")
        tokens.extend(from_file)
    return tuple(token.strip() for token in tokens)


def require_token_off_loopback(host: str, tokens: Collection[str]) -> None:
    if not tokens and not is_loopback(host):
        raise ServeRefused(
            f"refusing to serve on {host or 'every interface'} without a bearer token: set "
            "FETALMLOPS_INFERENCE_TOKENS or FETALMLOPS_INFERENCE_TOKENS_FILE, or listen on "
            "loopback (127.0.0.1)"
        )


class RequestTooLarge(Exception):
    """Raised into the application when a streamed body passes the limit."""


class RequestGuard:
    """Bearer-token authentication and a request size limit around an ASGI application."""

    def __init__(
        self,
        app: ASGIApp,
        tokens: Sequence[str],
        max_request_bytes: int,
        open_paths: Collection[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.tokens = Tokens.granting_every_scope(tokens)
        self.max_request_bytes = max_request_bytes
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.unauthenticated(scope)
        if scope["type"] == "websocket":
            if refusal is None:
                await self.app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": refusal[0]})
            return
        declared = content_length(scope)
        if refusal is not None:
            reason, challenge = refusal
            # An unauthenticated body is not read either, however long it is.
            streamed = declared is None and header(scope, b"transfer-encoding") is not None
            closing = CLOSE if streamed or (declared or 0) > 0 else []
            await respond(send, 401, reason, [(b"www-authenticate", challenge), *closing])
            return
        if declared is not None and declared > self.max_request_bytes:
            await respond(send, 413, self.too_large(), CLOSE)
            return
        if (header(scope, b"content-encoding") or b"identity").strip().lower() != b"identity":
            reason = "a compressed body (Content-Encoding) is not accepted: send it uncompressed"
            await respond(send, 415, reason, CLOSE)
            return
        await self.limited(scope, receive, send)

    def unauthenticated(self, scope: Scope) -> tuple[str, bytes] | None:
        """Why this request may not pass and the challenge to answer with, or None."""
        if not self.tokens or scope["path"] in self.open_paths:
            return None
        credentials = header(scope, b"authorization")
        presented = None if credentials is None else credentials.decode("latin-1")
        refused = self.tokens.refusal(presented, MODELS_PREDICT)
        return None if refused is None else (refused.reason, refused.challenge.encode())

    def too_large(self) -> str:
        # Not the declared length: a Content-Length is the client's to write.
        return f"the request body is over the limit of {self.max_request_bytes} bytes"

    async def limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs the application, cutting off a body that streams past the limit with 413."""
        received = 0
        cut_off = answered = False

        async def counted() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_request_bytes:
                    cut_off = True
                    raise RequestTooLarge(self.too_large())
            return message

        async def answer(message: Message) -> None:
            nonlocal answered
            if cut_off and not answered:
                return  # the application's answer to the cut-off body: 413 replaces it
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except Exception:
            if not cut_off or answered:
                raise
        if cut_off and not answered:
            await respond(send, 413, self.too_large(), CLOSE)


# Refusing a body it will not read, the server closes the connection rather than drain it.
CLOSE = [(b"connection", b"close")]


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None


def content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    # The HTTP server has already refused a malformed Content-Length.
    return int(value) if value is not None and value.strip().isdigit() else None


async def respond(
    send: Send, status: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
