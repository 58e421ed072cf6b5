import json
import math

import numpy as np
import pytest
from numpy.typing import NDArray

from fetalmlops.metrics.classification import accuracy, confusion_matrix, macro_f1
from fetalmlops.monitor.estimate import estimated, gap
from fetalmlops.monitor.performance import measured

CLASSES = ("abdomen", "brain", "femur", "thorax", "cervix")


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def window(rng: np.random.Generator, n: int, k: int = 5) -> NDArray[np.float64]:
    """Softmax rows of a fairly confident model: mean top probability about 0.75."""
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), rng.integers(0, k, n)] += 2.0
    return softmax(logits)


def labels_from(probs: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.int64]:
    """The truth a calibrated model's probabilities promise."""
    drawn = (rng.random((probs.shape[0], 1)) >= np.cumsum(probs, axis=1)).sum(axis=1)
    labels: NDArray[np.int64] = np.minimum(drawn, probs.shape[1] - 1)
    return labels


def test_hand_computed_expectations() -> None:
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    estimate = estimated(probs, ("brain", "femur"), draws=50)

    # Predictions 0, 0, 1: column j sums the probability rows predicting j.
    assert np.allclose(estimate.expected_confusion, [[1.4, 0.3], [0.6, 0.7]])
    assert estimate.accuracy.value == pytest.approx(0.7)
    assert estimate.accuracy_se == pytest.approx(math.sqrt(0.16 + 0.24 + 0.21) / 3)
    # Expected F1 = 2TP / (predicted + expected support): 2.8 / 3.7 and 1.4 / 2.3.
    assert estimate.per_class_f1 == pytest.approx({"brain": 2.8 / 3.7, "femur": 1.4 / 2.3})
    assert estimate.macro_f1.value == pytest.approx((2.8 / 3.7 + 1.4 / 2.3) / 2)
    assert estimate.predicted == {"brain": 2, "femur": 1}
    z = 1.959964
    assert estimate.accuracy.low == pytest.approx(0.7 - z * estimate.accuracy_se, abs=1e-5)
    assert estimate.accuracy.high == 1.0  # 0.7 + z·se passes 1: an accuracy cannot


def test_certain_probabilities_leave_nothing_to_estimate() -> None:
    probs = np.eye(3)[[0, 1, 2, 2, 1]]
    estimate = estimated(probs, ("brain", "femur", "thorax"), draws=20)

    assert estimate.accuracy.value == estimate.accuracy.low == estimate.accuracy.high == 1.0
    assert estimate.macro_f1.value == estimate.macro_f1.low == estimate.macro_f1.high == 1.0
    assert estimate.accuracy_se == 0.0


def test_calibrated_windows_land_inside_their_intervals() -> None:
    """Labels drawn from the probabilities: the realised figures fall inside ~95 % of the time,
    and the estimate is unbiased."""
    rng = np.random.default_rng(11)
    inside = {"accuracy": 0, "macro_f1": 0}
    gaps: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    for repeat in range(200):
        probs = window(rng, 400)
        truth = labels_from(probs, rng)
        estimate = estimated(probs, CLASSES, draws=300, seed=repeat)
        confusion = confusion_matrix(truth, probs.argmax(axis=1), 5)
        for name, realised in (
            ("accuracy", float(accuracy(confusion))),
            ("macro_f1", float(macro_f1(confusion, over="truth"))),
        ):
            interval = getattr(estimate, name)
            inside[name] += interval.low <= realised <= interval.high
            gaps[name].append(realised - interval.value)

    assert inside["accuracy"] >= 180, inside
    assert inside["macro_f1"] >= 180, inside
    assert abs(np.mean(gaps["accuracy"])) < 0.005
    assert abs(np.mean(gaps["macro_f1"])) < 0.01


def test_an_overconfident_model_shows_a_gap() -> None:
    rng = np.random.default_rng(3)
    calibrated = window(rng, 2000)
    truth = labels_from(calibrated, rng)
    # The same model served without its temperature: logits sharpened, argmax unchanged.
    sharpened = softmax(np.log(calibrated) * 3.0)
    predicted = sharpened.argmax(axis=1)
    performance = measured(truth, predicted, sharpened, CLASSES, bootstrap=200)

    report = gap(estimated(sharpened, CLASSES, draws=200), performance)

    assert report["n"] == 2000
    for name in ("accuracy", "macro_f1"):
        assert report[name]["gap"] < -0.1, report[name]
        assert report[name]["inside"] is False
        assert report[name]["realised"] == getattr(performance, name).value
    honest = gap(estimated(calibrated, CLASSES, draws=200), performance)
    assert honest["accuracy"]["inside"] and honest["macro_f1"]["inside"], honest
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_gap_refuses_figures_of_different_rows() -> None:
    rng = np.random.default_rng(4)
    probs = window(rng, 300)
    truth = labels_from(probs, rng)
    performance = measured(truth, probs.argmax(axis=1), probs, CLASSES, bootstrap=50)

    with pytest.raises(ValueError, match="not the same rows"):
        gap(estimated(probs[:200], CLASSES, draws=50), performance)
    # As many rows, but not the same ones.
    with pytest.raises(ValueError, match="not the same rows"):
        gap(estimated(window(rng, 300), CLASSES, draws=50), performance)
    with pytest.raises(ValueError, match="estimate is over"):
        gap(estimated(probs, tuple(reversed(CLASSES)), draws=50), performance)


def test_reproducible_chunked_and_json() -> None:
    rng = np.random.default_rng(5)
    probs = window(rng, 500).astype(np.float32)  # as the prediction events carry them
    first = estimated(probs, CLASSES, draws=100, seed=1)

    assert first == estimated(probs, CLASSES, draws=100, seed=1)
    assert first.macro_f1.low <= first.macro_f1.value <= first.macro_f1.high
    document = first.to_dict()
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_chunked_simulation_gives_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    probs = window(np.random.default_rng(6), 200)
    whole = estimated(probs, CLASSES, draws=60)
    monkeypatch.setattr("fetalmlops.monitor.estimate.SIMULATION_CHUNK_CELLS", 7 * 200 * 5)

    assert estimated(probs, CLASSES, draws=60) == whole


def test_refuses_what_is_not_a_window() -> None:
    with pytest.raises(ValueError, match="must sum to 1"):
        estimated([[0.9, 0.3]], ("brain", "femur"))
    with pytest.raises(ValueError, match="unique class names"):
        estimated([[0.9, 0.1]], ("brain",))
    with pytest.raises(ValueError, match="draws"):
        estimated([[0.9, 0.1]], ("brain", "femur"), draws=0)
