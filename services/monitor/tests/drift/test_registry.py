import time
from dataclasses import replace

import numpy as np
import pytest

from fetalmlops.monitor.drift import DEFAULT_ALPHA, DETECTORS, run_all
from fetalmlops.monitor.drift.base import Window

from .world import FEATURES, binomial_bound, reference, window


def test_every_test_runs_at_its_default_alpha_or_the_one_given() -> None:
    rng = np.random.default_rng(0)
    before, now = reference(rng, 400), window(rng, 200)
    outcomes = run_all(before, now)
    assert set(outcomes) == set(DETECTORS) == set(DEFAULT_ALPHA)
    assert {name: o.threshold for name, o in outcomes.items()} == DEFAULT_ALPHA
    assert all(o.test == name for name, o in outcomes.items())
    assert all(
        0 < o.p_value <= 1 and o.drifted == (o.p_value <= o.threshold) for o in outcomes.values()
    )
    assert {o.threshold for o in run_all(before, now, alpha=0.01).values()} == {0.01}


def test_distinct_reference_images_against_studies_of_near_identical_frames() -> None:
    """As the monitor runs them: the reference's rows are distinct images of a held-out split,
    a window's rows the frames of its requests, 8 to a study here."""
    trials = 200
    rng = np.random.default_rng(4)
    drifted = dict.fromkeys(DETECTORS, 0)
    for _ in range(trials):
        outcomes = run_all(reference(rng, 160), window(rng, 160, frames=8))
        for name, outcome in outcomes.items():
            drifted[name] += outcome.drifted
    rates = {name: count / trials for name, count in drifted.items()}
    print(f"registry: FPR, distinct reference images against 8-frame studies {rates}")
    assert max(rates.values()) <= binomial_bound(0.05, trials)


def test_a_window_of_200_predictions_takes_well_under_half_a_second() -> None:
    """Against a reference of 1,000 rows; the trainer's embedding sample is 256."""
    rng = np.random.default_rng(1)
    before, now = reference(rng, 1000), window(rng, 200)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        run_all(before, now)
        timings.append(time.perf_counter() - start)
    print(f"registry: run_all on 200 predictions, 1,000 reference rows: {min(timings):.3f} s")
    assert min(timings) < 0.5


def test_a_window_measured_differently_is_refused() -> None:
    rng = np.random.default_rng(2)
    before, now = reference(rng, 100), window(rng, 50)
    narrower = replace(now, embeddings=now.embeddings[:, :32])
    with pytest.raises(ValueError, match="reference"):
        run_all(before, narrower)
    with pytest.raises(ValueError, match="out of range"):
        run_all(before, replace(now, predicted=now.predicted + 6))


def test_a_reference_must_be_consistent() -> None:
    rng = np.random.default_rng(3)
    before = reference(rng, 100)
    with pytest.raises(ValueError, match="summing to 1"):
        replace(before, class_prior=before.class_prior * 2)
    with pytest.raises(ValueError, match="like features"):
        replace(before, features=FEATURES[:-1])
    with pytest.raises(ValueError, match="rows"):
        Window(
            probabilities=before.probabilities,
            image_stats=before.image_stats,
            embeddings=before.embeddings[:-1],
            predicted=before.probabilities.argmax(axis=1),
            blocks=before.blocks,
        )
