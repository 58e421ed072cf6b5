"""Micro-batching: concurrent requests share one model run.

One model run over N stacked images costs less than N runs of one (one dispatch, the cores or
the GPU kept busy), so requests that arrive together are stacked into one run and each gets
its own slice of the answer. A ``MicroBatcher`` owns one model (one CPU or GPU resource): it
runs one batch at a time (or ``parallel_runs``) in the event loop's default executor, so the
loop keeps answering probes while the model computes.

A batch is what is queued when the model becomes free: requests that arrived during the
previous run, and those that arrive within ``max_delay_ms`` of the first waiting one, up to
``max_batch_size`` images. A batch waits only for requests already on their way: the caller
announces each request it is decoding for this batcher (``expecting``), and with none
announced a lone request runs at once, so batching costs a lone client no latency. With
``max_delay_ms=0`` nothing waits, yet requests queued behind a run still share the next one.
``parallel_runs`` lets several batches run at once, each on its own executor thread: on a
CPU, two single-threaded runs keep two cores busier than one run with two intra-op threads.
A request is never split: one larger than ``max_batch_size`` runs alone. Requests whose images
differ in shape, dtype or device cannot be stacked: a batch ends before the first one that
differs, and that one leads the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

RunBatch = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
"""A blocking model run: N stacked images in, per-image outputs (first dimension N) out."""


@dataclass(frozen=True)
class BatchRun:
    """One model run, as ``on_batch`` observers see it."""

    requests: int
    images: int
    seconds: float
    failed: bool


@dataclass(frozen=True)
class BatchStats:
    """Totals since the batcher was made, for metrics."""

    batches: int = 0
    requests: int = 0
    images: int = 0
    failed_batches: int = 0
    largest_batch: int = 0

    @property
    def images_per_batch(self) -> float:
        return self.images / self.batches if self.batches else 0.0

    def counting(self, run: BatchRun) -> BatchStats:
        return BatchStats(
            batches=self.batches + 1,
            requests=self.requests + run.requests,
            images=self.images + run.images,
            failed_batches=self.failed_batches + run.failed,
            largest_batch=max(self.largest_batch, run.images),
        )


@dataclass(frozen=True)
class Pending:
    images: torch.Tensor
    answer: asyncio.Future[tuple[torch.Tensor, ...]]
    arrived: float

    def stacks_with(self, other: Pending) -> bool:
        a, b = self.images, other.images
        return (a.shape[1:], a.dtype, a.device) == (b.shape[1:], b.dtype, b.device)


class MicroBatcher:
    """Stacks concurrent ``submit`` calls into model runs of at most ``max_batch_size`` images."""

    def __init__(
        self,
        run: RunBatch,
        max_batch_size: int = 16,
        max_delay_ms: float = 2.0,
        on_batch: Callable[[BatchRun], None] | None = None,
        parallel_runs: int = 1,
    ) -> None:
        if parallel_runs < 1:
            raise ValueError(f"parallel_runs must be at least 1, not {parallel_runs}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must not be negative, not {max_delay_ms}")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000
        self.on_batch = on_batch
        self.parallel_runs = parallel_runs
        self.stats = BatchStats()
        self._queue: deque[Pending] = deque()
        self._arrival = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._expected = 0

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announces a request being decoded for this batcher: a batch may wait for it."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1
            self._arrival.set()  # a batch waiting for this request need not wait any longer

    @property
    def queued_images(self) -> int:
        return sum(len(p.images) for p in self._queue if not p.answer.done())

    async def submit(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The run's outputs for these images (n, C, H, W): each output's rows for this request.

        Raises what the run raised when the run this request was in failed.
        """
        if images.ndim < 1 or len(images) == 0:
            raise ValueError(f"nothing to run: images of shape {list(images.shape)}")
        loop = asyncio.get_running_loop()
        self._bind(loop)
        answer: asyncio.Future[tuple[torch.Tensor, ...]] = loop.create_future()
        self._queue.append(Pending(images, answer, loop.time()))
        self._arrival.set()
        self._start_worker(loop)
        # Cancelling this await cancels the future: the worker skips it, or drops its answer.
        return await answer

    async def close(self) -> None:
        """Stops the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue:
            self._queue.popleft().answer.cancel()
        self._worker = None

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            # A new event loop (tests, a restarted server): the old loop's futures are dead.
            self._queue.clear()
            self._arrival = asyncio.Event()
            self._loop, self._worker = loop, None

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="micro-batcher")
            self._worker.add_done_callback(self._worker_ended)

    def _worker_ended(self, worker: asyncio.Task[None]) -> None:
        if worker.cancelled() or worker.exception() is None:
            return
        # A defect in the batcher itself: the requests it would have run must not hang.
        log.error("micro-batcher stopped", exc_info=worker.exception())
        while self._queue:
            pending = self._queue.popleft()
            if not pending.answer.done():
                pending.answer.set_exception(RuntimeError("the micro-batcher stopped"))

    async def _work(self) -> None:
        # Runs while requests wait or runs are in flight, then ends (`submit` starts it again):
        # an idle batcher holds no task, so a version replaced by a promotion is freed once its
        # last request is done.
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        try:
            while self._queue or running:
                if self._queue and len(running) < self.parallel_runs:
                    await self._gather()
                    batch = self._take()
                    if batch:
                        task = loop.create_task(self._run(batch))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    continue
                # Every run busy, or nothing queued: until a run ends or a request arrives.
                self._arrival.clear()
                arrival = loop.create_task(self._arrival.wait())
                await asyncio.wait({*running, arrival}, return_when=asyncio.FIRST_COMPLETED)
                arrival.cancel()
        finally:
            for task in running:
                task.cancel()

    async def _gather(self) -> None:
        """Waits, while announced requests are on their way, until the first queued request has
        waited ``max_delay_s`` or a batch is full."""
        while self._queue and self._queue[0].answer.done():  # cancelled while queued
            self._queue.popleft()
        if not self._queue:
            return
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.max_delay_s
        while self._expected > 0 and self.queued_images < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.answer.done():  # cancelled while queued
                self._queue.popleft()
                continue
            if batch and (
                size + len(head.images) > self.max_batch_size or not head.stacks_with(batch[0])
            ):
                break
            batch.append(self._queue.popleft())
            size += len(head.images)
        return batch

    async def _run(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        images = batch[0].images if len(batch) == 1 else torch.cat([p.images for p in batch])
        begun = loop.time()
        try:
            outputs = await loop.run_in_executor(None, self.run, images)
            check_outputs(outputs, len(images))
        except asyncio.CancelledError:
            for pending in batch:
                pending.answer.cancel()
            raise
        except Exception as exc:
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
            self._count(BatchRun(len(batch), len(images), loop.time() - begun, failed=True))
            return
        start = 0
        for pending in batch:
            stop = start + len(pending.images)
            if not pending.answer.done():
                pending.answer.set_result(tuple(output[start:stop] for output in outputs))
            start = stop
        self._count(BatchRun(len(batch), len(images), loop.time() - begun, failed=False))

    def _count(self, run: BatchRun) -> None:
        self.stats = self.stats.counting(run)
        if self.on_batch is not None:
            try:
                self.on_batch(run)
            except Exception:
                # A metrics observer must not stop the batcher that every request waits on.
                log.exception("micro-batch observer failed")


def check_outputs(outputs: object, images: int) -> None:
    if not isinstance(outputs, tuple) or not all(isinstance(o, torch.Tensor) for o in outputs):
        raise TypeError(f"the batch run returned {type(outputs).__name__}, not a tuple of tensors")
    for index, output in enumerate(outputs):
        if output.ndim < 1 or len(output) != images:
            raise ValueError(
                f"the batch run's output {index} has shape {list(output.shape)}: "
                f"expected one row per image ({images})"
            )
