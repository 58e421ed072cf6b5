from dataclasses import replace

import numpy as np
import pytest

from fetalmlops.monitor.drift.base import Outcome, Reference, Window
from fetalmlops.monitor.drift.image import ALPHA, adjust, grey_level_ks

from .world import NARROW, Shift, binomial_bound, drift_rates, reference, window

TRIALS = 500


def bonferroni(before: Reference, after: Window) -> Outcome:
    return grey_level_ks(before, after, correction="bonferroni")


def uncorrected(before: Reference, after: Window) -> Outcome:
    """Any statistic at p <= alpha, the per-feature rule this test exists to replace."""
    outcome = grey_level_ks(before, after)
    return replace(outcome, drifted=min(outcome.detail["p_values"].values()) <= ALPHA)


def test_the_family_of_statistics_stays_nominal() -> None:
    rates = drift_rates(
        {"bh": grey_level_ks, "bonferroni": bonferroni}, TRIALS, 1000, 200, dim=NARROW
    )
    print(f"image: FPR {rates}")
    assert max(rates.values()) <= binomial_bound(ALPHA, TRIALS)


def test_uncorrected_statistics_alarm_too_often() -> None:
    rate = drift_rates({"uncorrected": uncorrected}, 100, 1000, 200, dim=NARROW)
    print(f"image: FPR, any statistic at p <= alpha: {rate}")
    assert rate["uncorrected"] > binomial_bound(ALPHA, 100)


def test_counting_studies_keeps_correlated_frames_nominal() -> None:
    detector = {"image": grey_level_ks}
    blocked = drift_rates(detector, TRIALS, 1000, 200, frames=8, dim=NARROW)["image"]
    naive = drift_rates(detector, 100, 1000, 200, frames=8, naive=True, dim=NARROW)
    print(f"image: FPR, 8 frames a study {blocked:.3f}, frames counted {naive}")
    assert blocked <= binomial_bound(ALPHA, TRIALS)
    assert naive["image"] > binomial_bound(ALPHA, 100)


@pytest.mark.parametrize(
    "shift",
    [Shift(brightness=0.02), Shift(contrast=0.9)],
    ids=["gain up by 2 % of full scale", "contrast down by 10 %"],
)
def test_detects_a_gain_or_contrast_change(shift: Shift) -> None:
    power = drift_rates({"image": grey_level_ks}, 200, 1000, 200, shift=shift, dim=NARROW)
    print(f"image: power {power}")
    assert power["image"] >= 0.8


def test_picture_size_is_not_tested() -> None:
    rng = np.random.default_rng(0)
    outcome = grey_level_ks(reference(rng, 300), window(rng, 100))
    assert set(outcome.detail["ks"]) == {"mean", "std", "p05", "p95", "dark_fraction"}


def test_adjusted_p_values() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.5])
    assert adjust(p, "benjamini-hochberg") == pytest.approx([0.04, 0.0533333, 0.0533333, 0.5])
    assert adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "holm")  # type: ignore[arg-type]
