"""From one test's window-by-window outcomes to alarm episodes, with a false-alarm budget.

A test at alpha = 0.05 flags one window in twenty with nothing changed, far too often to
retrain on. The alarm is a one-sided CUSUM (Page 1954) on each window's evidence
z = Φ⁻¹(1 − p), which is standard normal when p is uniform: S ← max(0, S + z − allowance),
firing when S reaches the threshold. Unlike "K drifted windows in a row", whose false-alarm
rate moves in steps of alpha^K, the threshold is continuous and so can meet any budget.

The threshold is calibrated, not derived: `null_p_values` draws windows with nothing changed by
splitting the reference itself, study by study, and `calibrate` replays the rule on streams of
those p-values and picks the smallest threshold whose rate of false episodes per window is
within the budget. Whatever a test's p-values really do under no shift (a conservative KS on
tied values, coarse permutation p-values) is thereby priced in. Windows must not overlap: the
rule takes successive windows as independent given the reference.

An episode starts when the alarm fires and ends when S has fallen back to 0. While it lasts,
S is held at the threshold, so a drift that persists for a week does not take a week to be
forgotten, and windows that flicker between drifted and not stay one episode: the caller sends
one retraining request per episode number. The state is a plain value the monitor persists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from fetalmlops.monitor.drift.base import Floats, Outcome, Reference, Window

ALLOWANCE = 0.5  # half the evidence of a shift whose windows average z = 1
P_FLOOR = 1e-9  # z within ±6: one extreme window must not outweigh several
STREAMS = 500


@dataclass(frozen=True)
class AlarmRule:
    threshold: float
    allowance: float = ALLOWANCE
    budget: float = float("nan")  # false episodes per window the threshold was calibrated to


@dataclass(frozen=True)
class AlarmState:
    cusum: float = 0.0
    active: bool = False
    episode: int = 0  # the number of the current or last episode, 0 before the first
    windows: int = 0


def step(rule: AlarmRule, state: AlarmState, outcome: Outcome) -> tuple[AlarmState, bool]:
    """The state after one more window, and whether an episode started with it. A window
    too small to test (an undecided outcome) is counted and changes nothing else."""
    if "undecided" in outcome.detail:
        return replace(state, windows=state.windows + 1), False
    cusum, active, started = _advance(
        np.array([state.cusum]), np.array([state.active]), evidence(outcome.p_value), rule
    )
    fired = bool(started[0])
    after = AlarmState(
        cusum=float(cusum[0]),
        active=bool(active[0]),
        episode=state.episode + fired,
        windows=state.windows + 1,
    )
    return after, fired


def evidence(p_values: Any) -> Floats:
    """z = Φ⁻¹(1 − p), with p kept within [P_FLOOR, 1 − P_FLOOR]."""
    p = np.clip(np.asarray(p_values, dtype=np.float64), P_FLOOR, 1.0 - P_FLOOR)
    return np.atleast_1d(np.asarray(stats.norm.isf(p), dtype=np.float64))


def null_p_values(
    reference: Reference,
    detector: Callable[[Reference, Window], Outcome],
    window_size: int,
    windows: int = 200,
    seed: int = 0,
) -> Floats:
    """The detector's p-values on `windows` no-shift windows split off the reference."""
    rng = np.random.default_rng(seed)
    return np.array([detector(*split(reference, window_size, rng)).p_value for _ in range(windows)])


def calibrate(
    null_p: Floats, budget: float, allowance: float = ALLOWANCE, seed: int = 0
) -> AlarmRule:
    """The smallest threshold whose false episodes per window, on streams resampled from
    `null_p`, are at most `budget` (bisection; the same draws for every threshold)."""
    if not 0 < budget < 1:
        raise ValueError(f"the budget is a rate per window in (0, 1), got {budget}")
    total = max(100_000, int(1000 / budget))  # about 1,000 false episodes at the answer
    draws = np.random.default_rng(seed).choice(evidence(null_p), (total // STREAMS, STREAMS))

    def rate(threshold: float) -> float:
        rule = AlarmRule(threshold, allowance)
        cusum, active = np.zeros(STREAMS), np.zeros(STREAMS, dtype=bool)
        starts = 0
        for z in draws:
            cusum, active, started = _advance(cusum, active, z, rule)
            starts += int(started.sum())
        return starts / draws.size

    low, high = 0.0, 1.0
    while rate(high) > budget:
        low, high = high, 2 * high
    for _ in range(20):
        middle = (low + high) / 2
        low, high = (middle, high) if rate(middle) > budget else (low, middle)
    return AlarmRule(high, allowance, budget)


def split(
    reference: Reference, window_size: int, rng: np.random.Generator
) -> tuple[Reference, Window]:
    """Whole studies drawn at random until they hold `window_size` rows, as a window, and the
    rest of the reference, with its class prior recounted, as its reference."""
    _, codes = np.unique(reference.blocks, return_inverse=True)
    codes = codes.reshape(-1)
    if 2 * window_size > len(codes):
        raise ValueError(f"a reference of {len(codes)} rows cannot hold out {window_size}")
    sizes = np.bincount(codes)
    order = rng.permutation(len(sizes))
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), window_size)) + 1]
    held_out = np.isin(codes, taken)
    rest = ~held_out
    predicted = reference.probabilities.argmax(axis=1)
    prior = np.bincount(predicted[rest], minlength=len(reference.classes)) / rest.sum()
    remaining = replace(
        reference,
        class_prior=prior,
        prior_studies=None,
        probabilities=reference.probabilities[rest],
        image_stats=reference.image_stats[rest],
        embeddings=reference.embeddings[rest],
        blocks=reference.blocks[rest],
    )
    window = Window(
        probabilities=reference.probabilities[held_out],
        image_stats=reference.image_stats[held_out],
        embeddings=reference.embeddings[held_out],
        predicted=predicted[held_out],
        blocks=reference.blocks[held_out],
    )
    return remaining, window


def _advance(
    cusum: Floats, active: NDArray[np.bool_], z: Floats, rule: AlarmRule
) -> tuple[Floats, NDArray[np.bool_], NDArray[np.bool_]]:
    """One window for many streams at once: (cusum, active, started)."""
    cusum = np.maximum(0.0, cusum + z - rule.allowance)
    started = ~active & (cusum >= rule.threshold)
    active = (active | started) & (cusum > 0)
    cusum = np.where(active, np.minimum(cusum, rule.threshold), cusum)
    return cusum, active, started
