"""Shadow scorings run beside the answers, never in front of them.

In shadow mode the champion answers and the challenger scores the same images afterwards, as
a task of its own on the event loop: the answer is returned without waiting for it, and its
failure is the task's alone (`PlanePredictor.shadow` catches, logs and counts it). A shadow
holds its request's decoded images until it is scored, so at most ``limit`` run at once: when
the challenger is slower than the traffic, a shadow beyond that is skipped (and counted), not
queued without bound. Comparing the arms needs a fair sample, not every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class ShadowRuns:
    """At most ``limit`` shadow tasks in flight, held so they are not collected mid-run."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the shadow limit must be at least 1, not {limit}")
        self.limit = limit
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return sum(not task.done() for task in self._running)

    def start(self, shadow: Coroutine[Any, Any, None]) -> bool:
        """Runs ``shadow`` on the running loop; False (and ``shadow`` closed unrun) when
        ``limit`` are in flight already."""
        if self.in_flight >= self.limit:
            shadow.close()
            return False
        task = asyncio.get_running_loop().create_task(shadow, name="shadow")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return True

    async def settled(self) -> None:
        """Waits for the shadows started on this loop (tests, and a draining server)."""
        loop = asyncio.get_running_loop()
        pending = [task for task in self._running if task.get_loop() is loop]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
