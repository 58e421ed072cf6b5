import numpy as np
import pytest

from fetalmlops.monitor.drift.alarm import (
    AlarmRule,
    AlarmState,
    calibrate,
    evidence,
    null_p_values,
    split,
    step,
)
from fetalmlops.monitor.drift.base import Outcome, undecided
from fetalmlops.monitor.drift.prediction import chi_square

from .world import CLASSES, NARROW, PRIOR, Shift, reference, window

BUDGET = 0.02  # false episodes per window: one every 50 windows with nothing changed
CASE_MIX = PRIOR + 0.12 * (np.eye(len(CLASSES))[1] - np.eye(len(CLASSES))[5])


def verdict(p: float) -> Outcome:
    return Outcome("test", 0.0, p, 0.05, p <= 0.05)


def test_calibration_meets_its_budget_on_streams_with_no_shift() -> None:
    """Four references, each calibrated on itself, then 500 fresh windows against each."""
    fired = windows = 0
    for seed in range(4):  # each stream's windows share its reference, so use several
        rng = np.random.default_rng(seed)
        before = reference(rng, 1000, dim=NARROW)
        rule = calibrate(null_p_values(before, chi_square, 200, seed=seed), BUDGET)
        state, starts = AlarmState(), 0
        for _ in range(500):
            state, started = step(rule, state, chi_square(before, window(rng, 200, dim=NARROW)))
            starts += started
        assert state.episode == starts
        fired, windows = fired + starts, windows + state.windows
    rate = fired / windows
    print(f"alarm: {fired} false episodes in {windows} windows, budget {BUDGET}")
    assert BUDGET / 4 <= rate <= BUDGET + 3 * np.sqrt(BUDGET / windows)


def test_fires_within_a_few_windows_of_a_shift() -> None:
    rng = np.random.default_rng(10)
    before = reference(rng, 1000, dim=NARROW)
    rule = calibrate(null_p_values(before, chi_square, 200), BUDGET)
    delays = []
    for _ in range(20):
        state, delay, started = AlarmState(), 0, False
        while not started:
            shifted = window(rng, 200, shift=Shift(prior=CASE_MIX), dim=NARROW)
            state, started = step(rule, state, chi_square(before, shifted))
            delay += 1
        delays.append(delay)
    print(f"alarm: threshold {rule.threshold:.2f}, windows to fire after a shift {delays}")
    assert max(delays) <= 4
    assert np.mean(delays) <= 2.5


def test_one_episode_per_drift_however_it_flickers() -> None:
    rule = AlarmRule(threshold=4.0)
    stream = (
        [0.5] * 10  # nothing
        + [1e-4, 0.3] * 8  # drift, one window in two not significant on its own: fires at 12
        + [0.9] * 10  # back to normal: the evidence drains away and the episode ends
        + [1e-4] * 5  # a new drift: fires at 37
    )
    state, starts = AlarmState(), []
    for index, p in enumerate(stream):
        state, fired = step(rule, state, verdict(p))
        if fired:
            starts.append((index, state.episode))
        if index == 35:
            assert not state.active
    assert starts == [(12, 1), (37, 2)]
    assert state.active
    assert state.windows == len(stream)


def test_an_undecided_window_changes_nothing_but_the_count() -> None:
    rule, state = AlarmRule(threshold=4.0), AlarmState(cusum=2.5, active=False, episode=3)
    after, fired = step(rule, state, undecided("mmd", 0.05, "one study"))
    assert not fired
    assert (after.cusum, after.active, after.episode, after.windows) == (2.5, False, 3, 1)


def test_uniform_p_values_give_the_textbook_cusum_threshold() -> None:
    """Page's one-sided CUSUM on N(0, 1) with allowance 0.5 runs 338 windows to a false alarm
    at h = 4 and 938 at h = 5 by Siegmund's approximation (twice the two-sided 168 and 465 of
    Montgomery's table); an episode then lasts about 10 windows before another can start."""
    uniform = np.random.default_rng(0).random(5000)
    assert calibrate(uniform, 1 / (338 + 10)).threshold == pytest.approx(4.0, abs=0.2)
    assert calibrate(uniform, 1 / (938 + 10)).threshold == pytest.approx(5.0, abs=0.2)


def test_evidence_is_the_normal_quantile_of_p() -> None:
    assert evidence([0.5, 0.05, 1.0, 0.0]) == pytest.approx([0.0, 1.6449, -5.998, 5.998], abs=1e-3)


def test_split_keeps_studies_whole() -> None:
    rng = np.random.default_rng(5)
    before = reference(rng, 400, frames=8, dim=NARROW)
    rest, held_out = split(before, 100, rng)
    assert len(held_out.blocks) >= 100
    assert not set(held_out.blocks) & set(rest.blocks)
    assert len(held_out.blocks) + len(rest.blocks) == 400
    assert rest.class_prior.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cannot hold out"):
        split(before, 300, rng)
