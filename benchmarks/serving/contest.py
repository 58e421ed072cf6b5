"""The contest: each contender's requests timed at the caller, the contenders taking turns.

Throughput is the requests over the span from the first measured request to the last answer.
At each concurrency the contenders take turns, a share of the requests each, the order rotating,
so that all meet the same load on a shared machine.
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rich.progress import Progress

from serving.contenders import Session


@dataclass(frozen=True)
class Run:
    """One contender's measured requests: of one round, or of all rounds pooled."""

    latencies: list[float]  # seconds, one per measured request
    seconds: float  # from the first measured request to the last answer (summed over rounds)

    def percentile(self, p: int) -> float:
        """In milliseconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds


# Every round's run, by contender and concurrency.
Results = dict[tuple[str, int], list[Run]]


def pooled(runs: Sequence[Run]) -> Run:
    return Run([t for run in runs for t in run.latencies], sum(run.seconds for run in runs))


def measure(
    session: Session,
    images: Sequence[bytes],
    requests: int,
    concurrency: int,
    warmup: int,
    advance: Callable[[], None],
) -> Run:
    """``requests`` calls spread over ``concurrency`` threads, images taken round-robin.

    Every thread first warms its own connection up, then all start together; a shared
    counter hands out the measured requests, so a slower thread simply takes fewer.
    """
    handed_out = itertools.count()  # next() on it is atomic under the GIL
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    finished = [0.0] * concurrency
    began: list[float] = []
    barrier = threading.Barrier(concurrency, action=lambda: began.append(time.perf_counter()))

    def worker(slot: int) -> None:
        try:
            with session() as call:
                for i in range(math.ceil(warmup / concurrency)):
                    call(images[(slot + i) % len(images)])
                barrier.wait()
                own = latencies[slot]
                while (index := next(handed_out)) < requests:
                    started = time.perf_counter()
                    call(images[index % len(images)])
                    own.append(time.perf_counter() - started)
                    advance()
                finished[slot] = time.perf_counter()
        except BaseException:
            barrier.abort()  # the other threads stop waiting for this one
            raise

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return Run([t for own in latencies for t in own], max(finished) - began[0])


def contest(
    sessions: dict[str, Session],
    images: Sequence[bytes],
    levels: Sequence[tuple[int, int]],
    rounds: int,
    warmup: int,
) -> Results:
    """At each concurrency, the contenders take turns, one share of the requests at a time
    (the order rotating), so that all meet the same load on a shared machine."""
    results: Results = {}
    keys = list(sessions)
    with Progress() as progress:
        for concurrency, requests in levels:
            tasks = {
                key: progress.add_task(f"{key:<5}×{concurrency}", total=requests) for key in keys
            }
            share = math.ceil(requests / rounds)
            for turn in range(rounds):
                for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
                    # After the first round every thread is new but the model is warm: one
                    # request each opens its connection and starts its thread's torch state.
                    first = max(warmup, 2 * concurrency) if turn == 0 else concurrency
                    run = measure(
                        sessions[key],
                        images,
                        min(share, requests - turn * share),
                        concurrency,
                        first,
                        functools.partial(progress.advance, tasks[key]),
                    )
                    results.setdefault((key, concurrency), []).append(run)
    return results
