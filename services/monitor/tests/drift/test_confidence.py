import numpy as np
import pytest
from scipy import stats

from fetalmlops.monitor.drift.base import entropy, weighted_ks
from fetalmlops.monitor.drift.confidence import ALPHA, entropy_ks, top_probability_ks

from .world import NARROW, Shift, binomial_bound, drift_rates

TRIALS = 500
DETECTORS = {"confidence": top_probability_ks, "entropy": entropy_ks}


def test_false_alarms_stay_nominal() -> None:
    rates = drift_rates(DETECTORS, TRIALS, 1000, 200, dim=NARROW)
    print(f"confidence: FPR {rates}")
    assert max(rates.values()) <= binomial_bound(ALPHA, TRIALS)


def test_counting_studies_keeps_correlated_frames_nominal() -> None:
    blocked = drift_rates(DETECTORS, TRIALS, 1000, 200, frames=8, dim=NARROW)
    naive = drift_rates(DETECTORS, 100, 1000, 200, frames=8, naive=True, dim=NARROW)
    print(f"confidence: FPR, 8 frames a study {blocked}, frames counted {naive}")
    assert max(blocked.values()) <= binomial_bound(ALPHA, TRIALS)
    assert min(naive.values()) > binomial_bound(ALPHA, 100)


def test_detects_a_less_certain_model() -> None:
    """Logits 15 % smaller: the mean top probability falls from 0.71 to 0.64."""
    power = drift_rates(DETECTORS, 200, 1000, 200, shift=Shift(confidence=0.85), dim=NARROW)
    print(f"confidence: power {power}")
    assert min(power.values()) >= 0.8


def test_entropy_is_zero_when_certain_and_log_k_when_uniform() -> None:
    probabilities = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert entropy(probabilities) == pytest.approx([0.0, np.log(4)])


def test_one_frame_a_study_is_the_textbook_ks_test() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(0.2, 1, size=120)
    d, p = weighted_ks(x, np.arange(300), y, np.arange(120))
    expected = stats.ks_2samp(x, y, method="asymp")
    assert (d, p) == pytest.approx((expected.statistic, expected.pvalue))


def test_identical_frames_of_a_study_count_once() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=20)
    once = weighted_ks(x, np.arange(50), y, np.arange(20))
    x_blocks, y_blocks = np.repeat(np.arange(50), 3), np.repeat(np.arange(20), 8)
    repeated = weighted_ks(np.repeat(x, 3), x_blocks, np.repeat(y, 8), y_blocks)
    assert repeated == pytest.approx(once)
