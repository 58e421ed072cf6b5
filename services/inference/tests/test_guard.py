"""The guard: bearer tokens, the request size limit, compressed bodies, the start-up refusals.

The middleware runs around small real ASGI applications (Starlette and FastAPI, as KServe's
app is); the whole server, over HTTP, is in tests/integration/test_inference_guard.py.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from fetalmlops.inference.guard import (
    OPEN_PATHS,
    RequestGuard,
    ServeRefused,
    bearer_tokens,
    require_token_off_loopback,
)
from fetalmlops.inference.settings import InferenceSettings

TOKENS = ("first-secret", "second-secret")
LIMIT = 1024


class Reached:
    """What the application behind the guard saw: the requests that got through."""

    def __init__(self) -> None:
        self.paths: list[str] = []


def starlette_app(reached: Reached) -> Starlette:
    async def body_length(request: Request) -> Response:
        reached.paths.append(request.url.path)
        return JSONResponse({"bytes": len(await request.body())})

    async def websocket(socket: WebSocket) -> None:
        reached.paths.append(socket.url.path)
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    methods = ["GET", "POST"]
    paths = [*OPEN_PATHS, "/v1/models", "/v2/repository/models/m/unload", "/echo", "/"]
    return Starlette(
        routes=[
            *(Route(path, body_length, methods=methods) for path in paths),
            WebSocketRoute("/ws", websocket),
        ]
    )


class Tensor(BaseModel):
    name: str


def fastapi_app(reached: Reached) -> FastAPI:
    """A route declared as KServe declares /v2/models/<name>/infer: FastAPI reads the body."""
    app = FastAPI()

    @app.post("/infer")
    async def infer(request_body: Tensor | bytes) -> dict[str, str]:
        reached.paths.append("/infer")
        return {"got": type(request_body).__name__}

    return app


def client(app: ASGIApp, tokens: tuple[str, ...] = TOKENS) -> TestClient:
    return TestClient(RequestGuard(app, tokens, max_request_bytes=LIMIT))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_configured_token_opens_and_nothing_else_does() -> None:
    reached = Reached()
    http = client(starlette_app(reached))

    for token in TOKENS:
        assert http.post("/echo", content=b"abc", headers=bearer(token)).json() == {"bytes": 3}
    assert http.get("/v1/models", headers={"authorization": "bearer first-secret"}).is_success

    missing = http.post("/echo", content=b"abc")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "missing bearer token" in missing.json()["error"]
    assert missing.headers["connection"] == "close"  # its body is not read
    wrong = http.post("/echo", headers=bearer("first-secreT"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert wrong.json() == {"error": "invalid bearer token"}
    for credentials in ("Basic Zmlyc3Qtc2VjcmV0", "Bearer", "first-secret"):
        refused = http.get("/v1/models", headers={"Authorization": credentials})
        assert refused.status_code == 401
        assert "not 'Bearer <token>'" in refused.json()["error"]
        assert "connection" not in refused.headers  # no body: the connection may be kept
    assert reached.paths == ["/echo", "/echo", "/v1/models"]  # nothing refused reached it


def test_probes_and_metrics_are_open_and_every_other_path_is_not() -> None:
    reached = Reached()
    http = client(starlette_app(reached))

    for path in sorted(OPEN_PATHS):
        assert http.get(path).status_code == 200, path
    for path in ("/", "/v1/models", "/metrics/", "/healthz/../v1/models"):
        assert http.get(path).status_code == 401, path
    unload = http.post("/v2/repository/models/m/unload")
    assert unload.status_code == 401
    assert "/v2/repository/models/m/unload" not in reached.paths


def test_without_tokens_every_request_passes() -> None:
    http = client(starlette_app(Reached()), tokens=())
    assert http.post("/echo", content=b"abcd").json() == {"bytes": 4}
    assert http.get("/v1/models").status_code == 200


def test_a_websocket_needs_the_token_too() -> None:
    http = client(starlette_app(Reached()))
    with http.websocket_connect("/ws", headers=bearer(TOKENS[0])) as socket:
        assert socket.receive_text() == "hello"
    with pytest.raises(WebSocketDisconnect) as refused, http.websocket_connect("/ws"):
        pass
    assert refused.value.code == 1008


@dataclass
class Exchange:
    status: int
    headers: dict[bytes, bytes]
    body: Any
    chunks_read: int
    responses_started: int


async def exchange(app: ASGIApp, chunks: list[bytes], headers: dict[str, str]) -> Exchange:
    """One POST /echo straight through ASGI, its body streamed in ``chunks``."""
    pending = list(chunks)
    read = 0

    async def receive() -> Message:
        nonlocal read
        if not pending:
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/echo",
        "raw_path": b"/echo",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Exchange(starts[0]["status"], dict(starts[0]["headers"]), json.loads(body),
                    read, len(starts))  # fmt: skip


def test_a_declared_length_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    reached = Reached()
    guard = RequestGuard(starlette_app(reached), TOKENS, max_request_bytes=LIMIT)
    headers = bearer(TOKENS[0]) | {"content-length": str(LIMIT + 1)}
    answer = asyncio.run(exchange(guard, [b"x" * (LIMIT + 1)], headers))

    assert (answer.status, answer.chunks_read, reached.paths) == (413, 0, [])
    # The declared length is the client's to write: the answer names the limit only.
    assert answer.body == {"error": f"the request body is over the limit of {LIMIT} bytes"}
    assert answer.headers[b"connection"] == b"close"


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    reached = Reached()
    guard = RequestGuard(starlette_app(reached), TOKENS, max_request_bytes=LIMIT)
    chunks = [b"x" * 300] * 10  # 3000 bytes, no Content-Length

    answer = asyncio.run(exchange(guard, chunks, bearer(TOKENS[0])))
    assert answer.status == 413 and answer.responses_started == 1
    assert answer.chunks_read == 4  # 1200 bytes: the chunk that passed 1024, and no further
    assert "over the limit of 1024 bytes" in answer.body["error"]
    assert answer.headers[b"connection"] == b"close"

    at_limit = asyncio.run(exchange(guard, [b"x" * 512, b"y" * 512], bearer(TOKENS[0])))
    assert (at_limit.status, at_limit.body) == (200, {"bytes": LIMIT})


def test_the_limit_holds_where_fastapi_turns_a_body_error_into_its_own_answer() -> None:
    # FastAPI answers any failure reading a declared body with 400 "There was an error
    # parsing the body"; the guard replaces that answer with the 413 it means.
    reached = Reached()
    http = client(fastapi_app(reached))
    chunks = iter([b"x" * 600, b"x" * 600])
    refused = http.post("/infer", content=chunks, headers=bearer(TOKENS[0]))
    assert refused.status_code == 413, refused.text
    assert "over the limit" in refused.json()["error"]
    assert reached.paths == []

    accepted = http.post(
        "/infer",
        content=b"raw tensor bytes",
        headers=bearer(TOKENS[0]) | {"content-type": "application/octet-stream"},
    )
    assert accepted.json() == {"got": "bytes"}


def test_a_compressed_body_is_refused_unread() -> None:
    reached = Reached()
    guard = RequestGuard(starlette_app(reached), TOKENS, max_request_bytes=LIMIT)
    for encoding in ("gzip", "deflate", "br"):
        headers = bearer(TOKENS[0]) | {"content-encoding": encoding, "content-length": "3"}
        answer = asyncio.run(exchange(guard, [b"abc"], headers))
        assert (answer.status, answer.chunks_read, reached.paths) == (415, 0, [])
        assert "Content-Encoding" in answer.body["error"]
    identity = bearer(TOKENS[0]) | {"content-encoding": "Identity", "content-length": "3"}
    assert asyncio.run(exchange(guard, [b"abc"], identity)).body == {"bytes": 3}


def test_tokens_come_from_the_settings_and_the_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# rotated 2026-01\n\n  from-the-file  \n# old-token\nsecond-from-file\n")
    settings = InferenceSettings(tokens=[SecretStr("from-settings")], tokens_file=path)
    assert bearer_tokens(settings) == ("from-settings", "from-the-file", "second-from-file")
    assert bearer_tokens(InferenceSettings()) == ()


def test_a_tokens_file_that_is_missing_or_empty_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    with pytest.raises(ServeRefused, match=f"cannot read the bearer tokens file {missing}"):
        bearer_tokens(InferenceSettings(tokens_file=missing))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ServeRefused, match=f"the bearer tokens file {empty} holds no token"):
        bearer_tokens(InferenceSettings(tokens_file=empty))
    with pytest.raises(ServeRefused, match="empty token"):
        bearer_tokens(InferenceSettings(tokens=[SecretStr(" ")]))


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_without_a_token_loopback_is_served(host: str) -> None:
    require_token_off_loopback(host, ())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "inference.example.org"])
def test_without_a_token_any_other_address_is_refused(host: str) -> None:
    with pytest.raises(ServeRefused, match="without a bearer token"):
        require_token_off_loopback(host, ())
    require_token_off_loopback(host, ("a-token",))
