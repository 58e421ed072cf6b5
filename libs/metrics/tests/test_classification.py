"""The figures the trainer's model cards and the monitor's reports share, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn import metrics

from fetalmlops.metrics.classification import (
    ECE_BINS,
    accuracy,
    balanced_accuracy,
    check_class_names,
    class_indices,
    confidence_bins,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_f1,
    per_class_precision,
    per_class_recall,
    present,
    probability_rows,
    reliability,
)


def test_hand_computed_window() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    confusion = confusion_matrix(truth, predicted, 3)

    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 = 2TP / (predicted + support): 2/4, 4/5, 2/3.
    assert float(macro_f1(confusion, over="truth")) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert per_class_precision(confusion).tolist() == [0.5, 2 / 3, 1.0]
    assert per_class_recall(confusion).tolist() == [0.5, 1.0, 0.5]
    assert float(balanced_accuracy(confusion)) == pytest.approx(2 / 3)
    assert float(accuracy(confusion)) == pytest.approx(4 / 6)


def test_the_two_macro_averages_differ_only_by_a_class_predicted_but_never_true() -> None:
    # truth 0 0 1 1, prediction 0 2 1 1: class 2 has no support, one false positive; class 3
    # is in neither and counts in neither average.
    # F1: 0 -> 2/3, 1 -> 1, 2 -> 0; recalls 1/2 and 1.
    confusion = confusion_matrix([0, 0, 1, 1], [0, 2, 1, 1], 4)

    assert present(confusion, "truth").tolist() == [True, True, False, False]
    assert present(confusion, "truth or prediction").tolist() == [True, True, True, False]
    assert float(macro_f1(confusion, over="truth")) == pytest.approx(5 / 6)
    assert float(macro_f1(confusion, over="truth or prediction")) == pytest.approx(5 / 9)
    assert float(balanced_accuracy(confusion)) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="over must be"):
        macro_f1(confusion, over="prediction")  # type: ignore[arg-type]


def test_an_undefined_ratio_is_nan() -> None:
    # Class 1 is predicted but never true, class 2 in neither.
    confusion = confusion_matrix([0, 0], [0, 1], 3)

    assert per_class_precision(confusion).tolist()[:2] == [1.0, 0.0]
    assert np.isnan(per_class_precision(confusion)[2])
    assert np.isnan(per_class_recall(confusion)[1:]).all()
    assert per_class_f1(confusion)[1] == 0.0
    assert np.isnan(per_class_f1(confusion)[2])
    assert np.isnan(accuracy(np.zeros((3, 3), dtype=np.int64)))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(5, 80))
    # Some windows lack a class in the truth that the model still predicts.
    truth = rng.integers(0, max(1, k - int(rng.integers(0, 2))), n)
    predicted = np.where(rng.random(n) < 0.6, truth, rng.integers(0, k, n))
    confusion = confusion_matrix(truth, predicted, k)
    true_classes = np.unique(truth)
    every = list(range(k))

    assert confusion.tolist() == metrics.confusion_matrix(truth, predicted, labels=every).tolist()
    for ours, theirs in (
        (per_class_precision, metrics.precision_score),
        (per_class_recall, metrics.recall_score),
        (per_class_f1, metrics.f1_score),
    ):
        expected = theirs(truth, predicted, labels=every, average=None, zero_division=np.nan)
        assert ours(confusion) == pytest.approx(expected, nan_ok=True)
    assert float(macro_f1(confusion, over="truth")) == pytest.approx(
        metrics.f1_score(truth, predicted, labels=true_classes, average="macro", zero_division=0)
    )
    assert float(macro_f1(confusion, over="truth or prediction")) == pytest.approx(
        metrics.f1_score(truth, predicted, average="macro", zero_division=0)
    )
    assert float(balanced_accuracy(confusion)) == pytest.approx(
        metrics.balanced_accuracy_score(truth, predicted)
    )
    assert float(accuracy(confusion)) == pytest.approx(metrics.accuracy_score(truth, predicted))
    if set(predicted) <= set(truth):  # then the two averages are over the same classes
        assert macro_f1(confusion, over="truth") == macro_f1(confusion, over="truth or prediction")


def test_a_stack_of_matrices_scores_each() -> None:
    rng = np.random.default_rng(3)
    truth, predicted = rng.integers(0, 4, (7, 50)), rng.integers(0, 4, (7, 50))
    confidence = rng.uniform(0.25, 1.0, (7, 50))
    stack = confusion_matrix(truth, predicted, 4)
    ece = expected_calibration_error(confidence, truth == predicted)

    assert stack.shape == (7, 4, 4)
    assert ece.shape == (7,)
    for i in range(7):
        single = confusion_matrix(truth[i], predicted[i], 4)
        assert (stack[i] == single).all()
        for over in ("truth", "truth or prediction"):
            assert macro_f1(stack, over=over)[i] == macro_f1(single, over=over)
        assert balanced_accuracy(stack)[i] == balanced_accuracy(single)
        assert accuracy(stack)[i] == accuracy(single)
        assert ece[i] == expected_calibration_error(confidence[i], truth[i] == predicted[i])


def test_truths_and_predictions_broadcast() -> None:
    truth = np.array([[0, 1, 1], [1, 1, 1]])
    predicted = np.array([0, 1, 0])

    assert confusion_matrix(truth, predicted, 2).tolist() == [[[1, 0], [1, 1]], [[0, 0], [2, 1]]]


def test_confidence_bins_are_closed_on_the_right() -> None:
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)

    assert ECE_BINS == 15
    assert confidence_bins([0.0, edges[1], np.nextafter(edges[1], 1.0), 1.0]).tolist() == [
        0,
        0,
        1,
        14,
    ]
    assert confidence_bins([0.3, 0.7], bins=2).tolist() == [0, 1]


def brute_force_ece(confidence: NDArray[np.float64], correct: NDArray[np.bool_]) -> float:
    """Guo et al. 2017, eq. 3, bin by bin."""
    total = 0.0
    for b in range(ECE_BINS):
        low, high = b / ECE_BINS, (b + 1) / ECE_BINS
        inside = (confidence > low) & (confidence <= high) | ((b == 0) & (confidence == 0))
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            total += inside.sum() / confidence.shape[0] * gap
    return total


def test_ece_of_crafted_examples() -> None:
    confidence = np.array([0.9, 0.9, 0.65, 0.65])
    correct = np.array([True, False, True, True])
    # Bin (13/15, 14/15]: accuracy 0.5 at confidence 0.9; bin (9/15, 10/15]: 1.0 at 0.65.
    assert float(expected_calibration_error(confidence, correct)) == pytest.approx(
        (2 * 0.4 + 2 * 0.35) / 4
    )
    # One bin pools the two groups, and over- and under-confidence offset: |0.75 − 0.775|.
    assert float(expected_calibration_error(confidence, correct, bins=1)) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(confidence, correct, bins=0)


@pytest.mark.parametrize("seed", range(10))
def test_ece_and_the_reliability_table_agree_with_a_bin_by_bin_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.2, 1.0, 300)
    correct = rng.random(300) < confidence**2
    table = reliability(confidence, correct)

    assert float(expected_calibration_error(confidence, correct)) == pytest.approx(
        brute_force_ece(confidence, correct)
    )
    assert table.count.sum() == 300
    seen = table.count > 0
    from_table = (np.abs(table.accuracy - table.confidence) * table.count)[seen].sum() / 300
    assert from_table == pytest.approx(brute_force_ece(confidence, correct))
    assert (table.confidence[~seen] == 0).all() and (table.accuracy[~seen] == 0).all()


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (np.zeros((0, 3)), "no predictions"),
        (np.array([0.2, 0.3, 0.5]), r"\(n, k\)"),
        (np.array([[1.0], [1.0]]), "at least 2 classes"),
        (np.array([[2.0, 1.0, 0.5]]), "sum to 1"),
        (np.array([[1.5, -0.5, 0.0]]), "non-negative"),
        (np.array([[np.nan, 1.0]]), "finite"),
    ],
)
def test_what_is_not_a_probability_row_is_refused(
    probabilities: NDArray[np.float64], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        probability_rows(probabilities)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([], "no labels"),
        ([[0, 1]], "labels must be one-dimensional"),
        ([0.0, 1.0], "labels must be integers"),
        ([0, 3], r"labels must lie in \[0, 3\), got \[0, 3\]"),
        ([-1, 2], r"\[0, 3\), got \[-1, 2\]"),
    ],
)
def test_what_is_not_a_class_index_is_refused_by_its_name(
    indices: list[object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        class_indices(indices, 3, name="labels")


def test_class_indices_and_names_that_pass() -> None:
    assert class_indices(np.array([2, 0], dtype=np.uint8), 3).dtype == np.int64
    with pytest.raises(ValueError, match="class indices must be integers"):
        class_indices(["a"], 3)
    check_class_names(("brain", "femur"), 2)
    with pytest.raises(ValueError, match="3 class names but 2 probability columns"):
        check_class_names(("a", "b", "c"), 2)
    with pytest.raises(ValueError, match="not unique"):
        check_class_names(("a", "a"), 2)
