import json
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from fetalmlops.monitor.performance import ECE_BINS, expected_calibration_error, measured

CLASSES = ("abdomen", "brain", "femur", "thorax")


def served(predicted: NDArray[np.int64], k: int, top: float = 0.7) -> NDArray[np.float64]:
    """Probability rows whose top class is ``predicted``, the rest spread evenly."""
    probs = np.full((predicted.shape[0], k), (1 - top) / (k - 1))
    probs[np.arange(predicted.shape[0]), predicted] = top
    return probs


def test_ece_bins_the_top_probability_in_fifteen_equal_bins() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.35, 0.65], [0.35, 0.65]])
    predicted = probs.argmax(axis=1)
    truth = np.array([0, 1, 1, 1])
    # Bin (13/15, 14/15]: accuracy 0.5 at confidence 0.9; bin (9/15, 10/15]: 1.0 at 0.65.
    assert ECE_BINS == 15
    assert expected_calibration_error(truth, predicted, probs) == pytest.approx(
        (2 * 0.4 + 2 * 0.35) / 4
    )
    # One bin pools the two groups: |0.75 − 0.775|.
    assert expected_calibration_error(truth, predicted, probs, bins=1) == pytest.approx(0.025)


def test_measured_window_with_an_unconfirmed_class() -> None:
    # Femur is predicted once but no clinician confirmed one: it is not averaged over.
    truth = np.array([0, 0, 1, 1, 3, 3, 3, 0])
    predicted = np.array([0, 0, 1, 2, 3, 3, 1, 0])
    performance = measured(truth, predicted, served(predicted, 4), CLASSES, bootstrap=200)

    assert performance.averaged_over == ("abdomen", "brain", "thorax")
    assert performance.recall == {"abdomen": 1.0, "brain": 0.5, "femur": None, "thorax": 2 / 3}
    assert performance.support == {"abdomen": 3, "brain": 2, "femur": 0, "thorax": 3}
    # F1: abdomen 1, brain 2/(2+2) = 0.5, thorax 4/(2+3) = 0.8.
    assert performance.macro_f1.value == pytest.approx((1 + 0.5 + 0.8) / 3)
    assert performance.accuracy.value == pytest.approx(6 / 8)
    assert performance.n == 8
    for figure in (performance.macro_f1, performance.accuracy, performance.balanced_accuracy):
        assert 0 <= figure.low <= figure.value <= figure.high <= 1
    document = performance.to_dict()
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert document["recall"]["femur"] is None
    assert document["ece_bins"] == 15


def test_bootstrap_is_reproducible_and_widens_on_smaller_windows() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 2000)
    predicted = np.where(rng.random(2000) < 0.8, truth, rng.integers(0, 4, 2000))
    probs = served(predicted, 4)

    first = measured(truth, predicted, probs, CLASSES, seed=7)
    assert first == measured(truth, predicted, probs, CLASSES, seed=7)
    assert first != measured(truth, predicted, probs, CLASSES, seed=8)
    small = measured(truth[:100], predicted[:100], probs[:100], CLASSES, seed=7)
    for name in ("macro_f1", "balanced_accuracy", "accuracy", "ece"):
        wide, narrow = getattr(small, name), getattr(first, name)
        assert wide.high - wide.low > 2 * (narrow.high - narrow.low), name


def test_a_thousand_resamples_of_two_thousand_rows_well_under_a_second() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, 2000)
    predicted = np.where(rng.random(2000) < 0.7, truth, rng.integers(0, 6, 2000))
    probs = served(predicted, 6)
    classes = [f"plane {i}" for i in range(6)]
    measured(truth, predicted, probs, classes, bootstrap=10)  # numpy's first-call costs

    started = time.perf_counter()
    measured(truth, predicted, probs, classes, bootstrap=1000)
    assert time.perf_counter() - started < 0.5


def test_chunked_resampling_bounds_memory_without_changing_the_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(0, 4, 300)
    predicted = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 4, 300))
    probs = served(predicted, 4)
    whole = measured(truth, predicted, probs, CLASSES, bootstrap=100)
    monkeypatch.setattr("fetalmlops.monitor.performance.RESAMPLE_CHUNK_ROWS", 7 * 300)

    assert measured(truth, predicted, probs, CLASSES, bootstrap=100) == whole


def test_intervals_cover_the_population_figures() -> None:
    """Percentile intervals hold the true figure in about 95 % of 200 windows of 300 rows."""
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    # How each true class is predicted: the rare thorax is the hardest.
    mistakes = np.array(
        [
            [0.85, 0.05, 0.05, 0.05],
            [0.10, 0.80, 0.05, 0.05],
            [0.05, 0.10, 0.75, 0.10],
            [0.20, 0.10, 0.10, 0.60],
        ]
    )
    joint = prior[:, None] * mistakes
    true_f1 = 2 * np.diag(joint) / (joint.sum(axis=0) + joint.sum(axis=1))
    population = {
        "macro_f1": true_f1.mean(),
        "balanced_accuracy": np.diag(mistakes).mean(),
        "accuracy": np.trace(joint),
    }
    cumulative = np.cumsum(mistakes, axis=1)
    rng = np.random.default_rng(2024)
    covered = dict.fromkeys(population, 0)
    for repeat in range(200):
        truth = rng.choice(4, size=300, p=prior)
        predicted = np.minimum((rng.random((300, 1)) >= cumulative[truth]).sum(axis=1), 3)
        window = measured(
            truth, predicted, served(predicted, 4), CLASSES, bootstrap=500, seed=repeat
        )
        for name, value in population.items():
            interval = getattr(window, name)
            covered[name] += interval.low <= value <= interval.high

    for name, count in covered.items():
        assert count >= 180, f"{name}: {count} of 200"


def test_ece_interval_excludes_zero_for_an_overconfident_model() -> None:
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 4, 1000)
    predicted = np.where(rng.random(1000) < 0.6, truth, (truth + 1) % 4)
    window = measured(truth, predicted, served(predicted, 4, top=0.95), CLASSES, bootstrap=300)

    assert window.ece.value == pytest.approx(0.35, abs=0.05)
    assert window.ece.low > 0.25


@pytest.mark.parametrize(
    ("truth", "predicted", "probabilities", "message"),
    [
        ([0, 1], [0, 1, 1], [[0.9, 0.1], [0.2, 0.8]], "2 true classes, 3 predictions"),
        ([0, 2], [0, 1], [[0.9, 0.1], [0.2, 0.8]], r"must lie in \[0, 2\)"),
        ([0, 1], [0, 1], [[0.9, 0.3], [0.2, 0.8]], "must sum to 1"),
        ([0, 1], [1, 0], [[0.9, 0.1], [0.2, 0.8]], "columns in the order of `classes`"),
        ([0.0, 1.0], [0, 1], [[0.9, 0.1], [0.2, 0.8]], "must be integers"),
        ([], [], np.empty((0, 2)), "no predictions"),
    ],
)
def test_refuses_what_is_not_a_window(
    truth: list[float], predicted: list[int], probabilities: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        measured(truth, predicted, probabilities, ("brain", "femur"), bootstrap=10)  # type: ignore[arg-type]


def test_refuses_mismatched_class_names_and_settings() -> None:
    probs = [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(ValueError, match="3 class names"):
        measured([0, 1], [0, 1], probs, ("a", "b", "c"))
    with pytest.raises(ValueError, match="not unique"):
        measured([0, 1], [0, 1], probs, ("a", "a"))
    with pytest.raises(ValueError, match="bootstrap"):
        measured([0, 1], [0, 1], probs, ("a", "b"), bootstrap=0)
    with pytest.raises(ValueError, match="level"):
        measured([0, 1], [0, 1], probs, ("a", "b"), level=1.0)
