from dataclasses import replace

import numpy as np
import pytest

from fetalmlops.monitor.drift.prediction import ALPHA, chi_square, pooled

from .world import CLASSES, NARROW, PRIOR, Shift, binomial_bound, drift_rates, reference, window

TRIALS = 500
DETECTOR = {"prediction": chi_square}


def test_false_alarms_stay_nominal() -> None:
    rate = drift_rates(DETECTOR, TRIALS, 1000, 200, dim=NARROW)["prediction"]
    print(f"prediction: FPR {rate:.3f}")
    assert rate <= binomial_bound(ALPHA, TRIALS)


def test_counting_studies_keeps_correlated_frames_nominal() -> None:
    blocked = drift_rates(DETECTOR, TRIALS, 1000, 200, frames=8, dim=NARROW)["prediction"]
    naive = drift_rates(DETECTOR, 100, 1000, 200, frames=8, naive=True, dim=NARROW)
    print(f"prediction: FPR, 8 frames a study {blocked:.3f}, frames counted {naive}")
    assert blocked <= binomial_bound(ALPHA, TRIALS)
    assert naive["prediction"] > binomial_bound(ALPHA, 100)


def test_detects_a_change_of_case_mix() -> None:
    prior = PRIOR.copy()
    prior[CLASSES.index("fetal_brain")] += 0.12  # a clinic sending more brain scans
    prior[CLASSES.index("other")] -= 0.12
    power = drift_rates(DETECTOR, 200, 1000, 200, shift=Shift(prior=prior), dim=NARROW)
    print(f"prediction: power {power}")
    assert power["prediction"] >= 0.8


def test_rare_classes_are_pooled_until_expected_five() -> None:
    observed = np.array([1.0, 0.0, 2.0, 40.0, 57.0])
    expected = np.array([2.0, 1.0, 3.0, 44.0, 50.0])
    merged_observed, merged_expected = pooled(observed, expected)
    assert merged_expected.tolist() == [44.0, 50.0, 6.0]
    assert merged_observed.tolist() == [40.0, 57.0, 3.0]
    assert pooled(observed[3:], expected[3:])[1].tolist() == [44.0, 50.0]


def test_a_class_the_reference_never_predicted_is_pooled_not_infinite() -> None:
    rng = np.random.default_rng(0)
    before = reference(rng, 300)
    prior = np.r_[0.0, before.class_prior[1:] / before.class_prior[1:].sum()]
    outcome = chi_square(replace(before, class_prior=prior), window(rng, 200))
    assert np.isfinite(outcome.statistic)
    assert outcome.detail["jensen_shannon"] > 0


def test_identical_shares_are_no_drift() -> None:
    rng = np.random.default_rng(1)
    before, now = reference(rng, 400), window(rng, 200)
    shares = np.bincount(now.predicted, minlength=len(CLASSES)) / 200
    outcome = chi_square(replace(before, class_prior=shares), now)
    assert outcome.statistic == pytest.approx(0.0)
    assert outcome.detail["jensen_shannon"] == pytest.approx(0.0, abs=1e-6)
    assert outcome.p_value == pytest.approx(1.0)
    assert not outcome.drifted


def test_a_prior_counted_on_more_studies_is_trusted_more() -> None:
    """The trainer counts the prior on the whole held-out split, beside a sample of its rows."""
    rng = np.random.default_rng(2)
    before, now = reference(rng, 400), window(rng, 200)
    own = chi_square(before, now)
    whole_split = chi_square(replace(before, prior_studies=1e12), now)
    assert whole_split.statistic == pytest.approx(own.statistic * (1 + 200 / 400))
