"""The micro-batcher: concurrent requests share model runs and each gets exactly its answer."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
import torch
from torch import nn

from fetalmlops.inference.batching import BatchRun, MicroBatcher


class Model:
    """A small real CNN as a batch run, recording the size of every batch it ran."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)
        ).eval()
        self.batches: list[int] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.batches.append(len(images))
        if (images < 0).any():
            raise ValueError("a poisoned image")
        with torch.no_grad():
            logits = self.net(images)
        return torch.softmax(logits, 1), logits.argmax(1)


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_concurrent_requests_share_runs_and_get_their_unbatched_answers() -> None:
    model = Model()
    requests = [images(1 + i % 3, seed=i) for i in range(16)]
    seen: list[BatchRun] = []

    async def main() -> list[tuple[torch.Tensor, ...]]:
        batcher = MicroBatcher(model, max_batch_size=16, max_delay_ms=20, on_batch=seen.append)
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        assert batcher.stats.requests == 16
        assert batcher.stats.images == sum(len(r) for r in requests) == sum(model.batches)
        assert batcher.stats.batches == len(model.batches) == len(seen)
        assert batcher.stats.largest_batch <= 16
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    assert len(model.batches) < 16 / 2, model.batches
    assert all(size <= 16 for size in model.batches)
    for request, (probabilities, labels) in zip(requests, answers, strict=True):
        alone_probabilities, alone_labels = Model()(request)
        assert probabilities.shape == (len(request), 6)
        # Not torch.testing: its first call imports for seconds.
        assert torch.allclose(probabilities, alone_probabilities, atol=1e-6)
        assert torch.equal(labels, alone_labels)


def identity(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return images.clone(), images.flatten(1).sum(1)


def test_each_request_gets_its_own_rows_in_order() -> None:
    sizes = [3, 1, 4, 2, 5]
    requests = [torch.full((n, 1, 2, 2), float(i)) + torch.arange(n)[:, None, None, None] / 10
                for i, n in enumerate(sizes)]  # fmt: skip

    async def main() -> list[tuple[torch.Tensor, ...]]:
        batcher = MicroBatcher(identity, max_batch_size=64, max_delay_ms=50)
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        assert batcher.stats.batches == 1  # all five within the delay: one run
        return answers

    for request, (rows, sums) in zip(requests, asyncio.run(main()), strict=True):
        assert torch.equal(rows, request)
        assert torch.equal(sums, request.flatten(1).sum(1))


def test_batches_stay_within_the_size_and_a_larger_request_runs_alone() -> None:
    model = Model()
    sizes = [1, 2, 1, 6, 3, 1, 4]

    async def main() -> list[tuple[torch.Tensor, ...]]:
        batcher = MicroBatcher(model, max_batch_size=4, max_delay_ms=30)
        return await asyncio.gather(*(batcher.submit(images(n, seed=n)) for n in sizes))

    answers = asyncio.run(main())
    assert [len(probabilities) for probabilities, _ in answers] == sizes
    # In arrival order: 1+2+1, then 6 alone (never split, never refused), 3+1, 4.
    assert model.batches == [4, 6, 4, 4]


def test_requests_arriving_during_a_run_share_the_next_even_without_delay() -> None:
    gate = threading.Event()
    model = Model(gate)

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=16, max_delay_ms=0)
        first = asyncio.create_task(batcher.submit(images(1, seed=0)))
        await asyncio.to_thread(model.started.wait, 10)
        queued = [asyncio.create_task(batcher.submit(images(2, seed=s))) for s in range(5)]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(first, *queued)

    asyncio.run(main())
    assert model.batches == [1, 10]


def test_a_request_waits_only_for_requests_on_their_way() -> None:
    async def timed(batcher: MicroBatcher, count: int, announced: int = 0) -> float:
        begun = time.monotonic()
        with contextlib.ExitStack() as others:
            for _ in range(announced):
                others.enter_context(batcher.expecting())
            await batcher.submit(images(count, seed=1))
        return time.monotonic() - begun

    async def main() -> tuple[float, float, float, float]:
        delayed = MicroBatcher(identity, max_batch_size=4, max_delay_ms=1000)
        no_delay = MicroBatcher(identity, max_batch_size=4, max_delay_ms=0)
        return (
            await timed(delayed, 1),
            await timed(delayed, 1, announced=1),
            await timed(delayed, 4, announced=1),
            await timed(no_delay, 1, announced=1),
        )

    alone, awaited, full, undelayed = asyncio.run(main())
    assert alone < 0.5, alone  # nothing else on its way: no wait
    assert awaited >= 0.95, awaited  # another request announced, never sent: the whole delay
    assert full < 0.5 and undelayed < 0.5, (full, undelayed)


def test_an_announced_request_joins_the_batch_as_soon_as_it_is_queued() -> None:
    model = Model()

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=16, max_delay_ms=5000)

        async def decoded_later() -> None:
            with batcher.expecting():
                await asyncio.sleep(0.1)  # still decoding when the first request is queued
            # As the predictor does: queued in the same step as the announcement ends.
            await batcher.submit(images(1, seed=2))

        begun = time.monotonic()
        await asyncio.gather(batcher.submit(images(1, seed=1)), decoded_later())
        assert time.monotonic() - begun < 2, "the batch ran when the announced one arrived"

    asyncio.run(main())
    assert model.batches == [2]


def test_a_failed_run_fails_exactly_its_requests_and_the_batcher_keeps_serving() -> None:
    gate = threading.Event()
    model = Model(gate)

    async def main() -> list[Any]:
        batcher = MicroBatcher(model, max_batch_size=16, max_delay_ms=0)
        first = asyncio.create_task(batcher.submit(images(1, seed=0)))
        await asyncio.to_thread(model.started.wait, 10)
        # Queued behind the first run, these three share the second: one of them is poisoned.
        poisoned = asyncio.create_task(batcher.submit(-images(1, seed=1)))
        neighbours = [asyncio.create_task(batcher.submit(images(2, seed=s))) for s in (2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        answers = await asyncio.gather(first, poisoned, *neighbours, return_exceptions=True)
        after = await batcher.submit(images(1, seed=4))
        assert batcher.stats.failed_batches == 1 and batcher.stats.batches == 3
        return [*answers, after]

    first, poisoned, *neighbours, after = asyncio.run(main())
    assert model.batches == [1, 5, 1]
    assert isinstance(first, tuple) and isinstance(after, tuple)
    for failed in (poisoned, *neighbours):
        assert isinstance(failed, ValueError) and "poisoned" in str(failed)


def test_a_cancelled_request_is_dropped_and_the_others_are_answered() -> None:
    gate = threading.Event()
    model = Model(gate)

    async def main() -> None:
        batcher = MicroBatcher(model, max_batch_size=16, max_delay_ms=0)
        first = asyncio.create_task(batcher.submit(images(1, seed=0)))
        await asyncio.to_thread(model.started.wait, 10)
        # One cancelled while queued, one cancelled while its own run is in flight.
        queued = asyncio.create_task(batcher.submit(images(3, seed=1)))
        kept = asyncio.create_task(batcher.submit(images(2, seed=2)))
        await asyncio.sleep(0.01)
        queued.cancel()
        first.cancel()
        gate.set()
        (probabilities, _) = await kept
        assert probabilities.shape == (2, 6)
        assert queued.cancelled() and first.cancelled()
        assert len((await batcher.submit(images(1, seed=3)))[0]) == 1

    asyncio.run(main())
    assert model.batches == [1, 2, 1]


def test_a_run_that_returns_the_wrong_rows_fails_its_requests() -> None:
    async def main() -> None:
        batcher = MicroBatcher(lambda x: (x[:1],), max_batch_size=8, max_delay_ms=0)
        with pytest.raises(ValueError, match="one row per image"):
            await batcher.submit(images(3, seed=0))
        with pytest.raises(ValueError, match="nothing to run"):
            await batcher.submit(images(0, seed=0))

    asyncio.run(main())


def test_images_of_different_shapes_are_never_stacked() -> None:
    async def main() -> tuple[tuple[torch.Tensor, ...], ...]:
        batcher = MicroBatcher(identity, max_batch_size=16, max_delay_ms=30)
        small, large = torch.zeros(2, 1, 2, 2), torch.ones(1, 1, 3, 3)
        answers = await asyncio.gather(batcher.submit(small), batcher.submit(large))
        assert batcher.stats.batches == 2
        return answers

    (small, _), (large, _) = asyncio.run(main())
    assert small.shape == (2, 1, 2, 2) and large.shape == (1, 1, 3, 3)


def test_parallel_runs_run_side_by_side_and_one_run_holds_the_rest() -> None:
    gate = threading.Event()

    class Counting(Model):
        def __init__(self) -> None:
            super().__init__(gate)
            self.inside, self.most = 0, 0
            self.lock = threading.Lock()

        def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            try:
                return super().__call__(images)
            finally:
                with self.lock:
                    self.inside -= 1

    def most_at_once(parallel_runs: int) -> int:
        model = Counting()
        gate.clear()

        async def main() -> None:
            batcher = MicroBatcher(model, 1, 0, parallel_runs=parallel_runs)
            tasks = [asyncio.create_task(batcher.submit(images(1, seed=s))) for s in range(4)]
            await asyncio.sleep(0.3)  # the runs that may start have started, and wait
            gate.set()
            await asyncio.gather(*tasks)

        asyncio.run(main())
        assert model.batches == [1, 1, 1, 1]
        return model.most

    assert most_at_once(2) == 2
    assert most_at_once(1) == 1
