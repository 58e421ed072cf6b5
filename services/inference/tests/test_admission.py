"""The budget of request bytes held at once, around a real ASGI application."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from fetalmlops.inference.admission import InFlight

KB = 1024


class Held:
    """An application that holds each request until told to answer, as decoding would."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await self.release.wait()
        self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def scope(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/m/infer",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


async def request(app: InFlight, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope(headers), receive, send)
    return sent[0]["status"], dict(sent[0]["headers"])


def test_requests_wait_for_room_and_none_waits_without_a_body() -> None:
    async def scenario() -> tuple[int, list[int]]:
        held = Held()
        app = InFlight(held, budget=100 * KB, max_request_bytes=64 * KB, wait_s=10)
        sized = [request(app, {"content-length": str(40 * KB)}) for _ in range(5)]
        tasks = [asyncio.create_task(r) for r in sized]
        await asyncio.sleep(0.05)
        admitted = held.running  # two of 40 KB fit in 100 KB
        empty = asyncio.create_task(request(app, {}))  # a GET: no body, no wait
        await asyncio.sleep(0.05)
        assert held.running == admitted + 1
        held.release.set()
        statuses = [status for status, _ in await asyncio.gather(*tasks, empty)]
        return admitted, statuses

    admitted, statuses = asyncio.run(scenario())
    assert admitted == 2
    assert statuses == [200] * 6


def test_a_chunked_body_counts_as_the_largest_and_a_long_wait_is_503() -> None:
    async def scenario() -> tuple[int, list[tuple[int, dict[bytes, bytes]]]]:
        held = Held()
        app = InFlight(held, budget=100 * KB, max_request_bytes=64 * KB, wait_s=0.2)
        chunked = {"transfer-encoding": "chunked"}
        first = asyncio.create_task(request(app, chunked))
        await asyncio.sleep(0.05)
        waited = await request(app, chunked)  # 64 + 64 KB do not fit: 503 after 0.2 s
        # Larger than the whole budget: admitted alone, not refused for its size.
        held.release.set()
        alone = await request(app, {"content-length": str(500 * KB)})
        return held.most, [await first, waited, alone]

    most, answers = asyncio.run(scenario())
    assert most == 1
    assert [status for status, _ in answers] == [200, 503, 200]
    assert answers[1][1][b"retry-after"] == b"1"
