"""The report: every contender against the in-process floor, and the issue's two targets.

(b)/(a) p50 latency at concurrency 1 at most 1.3 (the service adds little to a forward pass),
and (b)/(c) throughput at the high concurrency at least 1.0 (we serve at least as much as
TorchServe on the same machine), each over all rounds and as the median of the rounds' ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from serving.contenders import CONTENDERS
from serving.contest import Results, Run, pooled

TARGET_LATENCY_RATIO = 1.3  # (b)/(a) p50 at concurrency 1, at most
TARGET_THROUGHPUT_RATIO = 1.0  # (b)/(c) requests per second at concurrency 16, at least


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report(results: Results, concurrency: int) -> None:
    columns = ("conc.", "requests", "p50 ms", "p99 ms", "req/s", "p50 vs (a)", "req/s vs (a)")
    print(f"\n{'contender':<40}" + "".join(f"{c:>{len(c) + 3}}" for c in columns))
    for level in (1, concurrency):
        base = pooled(results["(a)", level])
        for key, name in CONTENDERS.items():
            run = pooled(results[key, level])
            print(
                f"{key:<5}{name:<35}{level:>8}{len(run.latencies):>11}"
                f"{run.percentile(50):>9.1f}{run.percentile(99):>9.1f}{run.throughput:>8.1f}"
                f"{run.percentile(50) / base.percentile(50):>13.2f}"
                f"{run.throughput / base.throughput:>15.2f}"
            )
    print()
    latency = ratios(results, 1, lambda b, a: b.percentile(50) / a.percentile(50), "(a)")
    met = [r <= TARGET_LATENCY_RATIO for r in latency]
    print(
        f"(b)/(a) p50 latency at concurrency 1 (target ≤ {TARGET_LATENCY_RATIO}): "
        f"{latency[0]:.2f} over all rounds {verdict(met[0])}, {latency[1]:.2f} the median of "
        f"the rounds' ratios {verdict(met[1])}"
    )
    throughput = ratios(results, concurrency, lambda b, c: b.throughput / c.throughput, "(c)")
    met = [r >= TARGET_THROUGHPUT_RATIO for r in throughput]
    print(
        f"(b)/(c) throughput at concurrency {concurrency} (target ≥ {TARGET_THROUGHPUT_RATIO}): "
        f"{throughput[0]:.2f} over all rounds {verdict(met[0])}, {throughput[1]:.2f} the median "
        f"of the rounds' ratios {verdict(met[1])}"
    )


def ratios(
    results: Results,
    level: int,
    ratio: Callable[[Run, Run], float],
    baseline: str,
) -> tuple[float, float]:
    """(b) against ``baseline``: over all rounds pooled, and the median of the rounds' ratios.

    Each round's ratio compares runs made within seconds of each other: a change of load on
    a shared machine slows both alike, so their median barely moves with it.
    """
    ours, theirs = results["(b)", level], results[baseline, level]
    by_round = [ratio(b, other) for b, other in zip(ours, theirs, strict=True)]
    return ratio(pooled(ours), pooled(theirs)), statistics.median(by_round)
