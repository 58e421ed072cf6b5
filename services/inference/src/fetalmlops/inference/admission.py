"""How many request bytes the server holds at once: a budget shared by every request.

Each request is read whole, then parsed, then decoded, and every step holds copies: a V2 JSON
tensor of N numbers is N Python objects before it is an array (about ten times its bytes), a
decoded picture is its pixels however small the file. The request size limit bounds one
request; nothing bounded how many are held together, and uvicorn reads every connection's
body at once. Measured on the real server before this budget (and before `binary.py` kept
tensors as views of the body), malformed binary FP32 requests of 28 MB sent 16 at a time
took it from 0.9 to 2.5 GB, and that memory stayed with the process.

``InFlight`` admits a request with a body once its bytes fit in ``budget`` with those already
admitted: its ``Content-Length``, or the request size limit for a chunked body (it cannot say
in advance). Until then it waits, its body unread in the socket (uvicorn stops reading a
connection whose body is not being received); a request that waits longer than ``wait_s`` is
answered 503 with ``Retry-After``. Requests without a body (metadata, probes) pass at once.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from fetalmlops.inference.guard import content_length, header, respond

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class InFlight:
    """Admits requests while the bytes they carry fit in ``budget`` (pure ASGI)."""

    def __init__(self, app: ASGIApp, budget: int, max_request_bytes: int, wait_s: float) -> None:
        self.app = app
        self.budget = budget
        self.max_request_bytes = max_request_bytes
        self.wait_s = wait_s
        self.held = 0
        self._released: asyncio.Condition | None = None

    def weight(self, scope: Scope) -> int:
        declared = content_length(scope)
        if declared is None:
            streamed = header(scope, b"transfer-encoding") is not None
            declared = self.max_request_bytes if streamed else 0
        # A request as large as the budget is admitted alone, never refused for its size.
        return min(declared, self.budget)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        weight = self.weight(scope) if scope["type"] == "http" else 0
        if weight == 0:
            await self.app(scope, receive, send)
            return
        if not await self.admit(weight):
            log.warning("request bytes in flight at the limit", extra={"budget": self.budget})
            reason = f"the server holds {self.budget} bytes of requests already: retry shortly"
            await respond(send, 503, reason, [(b"retry-after", b"%d" % RETRY_AFTER_S)])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await self.release(weight)

    def condition(self) -> asyncio.Condition:
        if self._released is None:
            # Made on the server's event loop, at its first request.
            self._released = asyncio.Condition()
        return self._released

    async def admit(self, weight: int) -> bool:
        released = self.condition()
        async with released:
            try:
                await asyncio.wait_for(
                    released.wait_for(lambda: self.held + weight <= self.budget), self.wait_s
                )
            except TimeoutError:
                return False
            self.held += weight
            return True

    async def release(self, weight: int) -> None:
        released = self.condition()
        async with released:
            self.held -= weight
            released.notify_all()
