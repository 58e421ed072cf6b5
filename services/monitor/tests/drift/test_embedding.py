from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial import distance

from fetalmlops.monitor.drift.base import Outcome, Reference, Window
from fetalmlops.monitor.drift.embedding import ALPHA, PERMUTATIONS, classifier_auc, mmd

from .world import Shift, binomial_bound, drift_rates, reference, window

TRIALS = 500
DETECTORS = {"mmd": mmd, "classifier": classifier_auc}
TESTS = pytest.mark.parametrize("detector", [mmd, classifier_auc])
Detector = Callable[[Reference, Window], Outcome]


def test_false_alarms_stay_nominal() -> None:
    """Small samples: a permutation test's size does not depend on them, its cost does."""
    rates = drift_rates(DETECTORS, TRIALS, 100, 60)
    print(f"embedding: FPR {rates}")
    assert max(rates.values()) <= binomial_bound(ALPHA, TRIALS)


def test_permuting_studies_keeps_correlated_frames_nominal() -> None:
    """8 near-identical frames a study: permuting frames builds a null far too narrow."""
    blocked = drift_rates(DETECTORS, 300, 160, 160, frames=8)
    naive = drift_rates(DETECTORS, 30, 160, 160, frames=8, naive=True)
    print(f"embedding: FPR, 8 frames a study {blocked}, frames permuted {naive}")
    assert max(blocked.values()) <= binomial_bound(ALPHA, 300)
    assert min(naive.values()) > binomial_bound(ALPHA, 30)


def test_detects_a_shift_of_the_embeddings() -> None:
    """0.3 of the spread in a quarter of the dimensions, 200 predictions against 256 rows (the
    trainer keeps a sample of 256)."""
    power = drift_rates(DETECTORS, 60, 256, 200, shift=Shift(embedding=0.3))
    print(f"embedding: power {power}")
    assert min(power.values()) >= 0.8


@TESTS
def test_identical_samples_are_not_drift(detector: Detector) -> None:
    """Evidently's MMD compares with the null's 5th percentile and flags identical data."""
    before = reference(np.random.default_rng(0), 200)
    same = Window(
        probabilities=before.probabilities,
        image_stats=before.image_stats,
        embeddings=before.embeddings,
        predicted=before.probabilities.argmax(axis=1),
        blocks=before.blocks,
    )
    outcome = detector(before, same)
    assert not outcome.drifted
    assert outcome.p_value > 0.5


def test_p_value_is_never_zero() -> None:
    rng = np.random.default_rng(1)
    outcome = mmd(reference(rng, 200), window(rng, 100, shift=Shift(embedding=3.0)))
    assert outcome.drifted
    assert outcome.p_value == pytest.approx(1 / (1 + PERMUTATIONS))


def test_identical_frames_weigh_as_one_study() -> None:
    rng = np.random.default_rng(2)
    before, now = reference(rng, 120), window(rng, 30, shift=Shift(embedding=0.5))
    repeated = replace(
        now,
        probabilities=np.repeat(now.probabilities, 4, axis=0),
        image_stats=np.repeat(now.image_stats, 4, axis=0),
        embeddings=np.repeat(now.embeddings, 4, axis=0),
        predicted=np.repeat(now.predicted, 4),
        blocks=np.repeat(now.blocks, 4),
    )
    for detector in (mmd, classifier_auc):
        once, four_times = detector(before, now), detector(before, repeated)
        assert four_times.statistic == pytest.approx(once.statistic)
        assert four_times.p_value == pytest.approx(once.p_value)


@TESTS
def test_one_study_is_undecided(detector: Detector) -> None:
    rng = np.random.default_rng(3)
    now = window(rng, 8, frames=8)
    outcome = detector(reference(rng, 100), now)
    assert not outcome.drifted
    assert "undecided" in outcome.detail


def test_mmd_is_the_study_weighted_statistic_of_its_definition() -> None:
    """The reference's kernel is summed once per reference and permutations gather study sums:
    the observed statistic must still be MMD² of the definition, written out here directly."""
    rng = np.random.default_rng(4)
    before = reference(rng, 90)
    now = window(rng, 24, frames=3, shift=Shift(embedding=0.4))
    bandwidth = float(np.median(distance.pdist(before.embeddings)))
    kernel = np.exp(-distance.cdist(
        np.concatenate([before.embeddings, now.embeddings]),
        np.concatenate([before.embeddings, now.embeddings]),
        "sqeuclidean",
    ) / (2 * bandwidth**2))  # fmt: skip
    _, studies, frames = np.unique(now.blocks, return_inverse=True, return_counts=True)
    signed = np.concatenate([
        np.full(len(before.embeddings), 1 / len(before.embeddings)),
        -1 / (frames[studies] * len(frames)),
    ])  # fmt: skip
    outcome = mmd(before, now)
    assert outcome.detail["bandwidth"] == pytest.approx(bandwidth)
    assert outcome.statistic == pytest.approx(signed @ kernel @ signed, rel=1e-9)
