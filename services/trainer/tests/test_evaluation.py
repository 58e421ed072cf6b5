import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fetalmlops.common.planes import Plane
from fetalmlops.trainer.evaluation import (
    ClassMetrics,
    confusion_matrix_png,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    reliability_diagram_png,
    softmax,
)

CLASSES = ("a", "b", "c")
# truth:      0 0 0 1 1 2
# prediction: 0 0 1 1 2 2
# confusion (rows truth): [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
# a: TP 2, predicted 2, support 3 -> P 1,   R 2/3, F1 2·1·(2/3)/(1 + 2/3) = 0.8
# b: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
# c: TP 1, predicted 2, support 1 -> P 1/2, R 1,   F1 2·(1/2)·1/(3/2)   = 2/3
# macro-F1 (0.8 + 0.5 + 2/3) / 3; balanced accuracy (2/3 + 1/2 + 1) / 3 = 13/18; accuracy 4/6.
TRUTH = [0, 0, 0, 1, 1, 2]
PREDICTED = [0, 0, 1, 1, 2, 2]


def confident(predicted: list[int], k: int, top: float) -> np.ndarray:
    """Probability rows putting ``top`` on the predicted class and sharing the rest evenly."""
    rows = np.full((len(predicted), k), (1 - top) / (k - 1))
    rows[np.arange(len(predicted)), predicted] = top
    return rows


def test_a_hand_computed_three_class_case() -> None:
    result = evaluate(TRUTH, confident(PREDICTED, 3, 0.7), CLASSES)

    assert result.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result.per_class["a"] == ClassMetrics(precision=1.0, recall=2 / 3, f1=0.8, support=3)
    assert result.per_class["b"] == ClassMetrics(precision=0.5, recall=0.5, f1=0.5, support=2)
    assert result.per_class["c"].precision == 0.5
    assert result.per_class["c"].recall == 1.0
    assert result.per_class["c"].f1 == pytest.approx(2 / 3)
    assert result.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result.balanced_accuracy == pytest.approx(13 / 18)
    assert result.accuracy == pytest.approx(4 / 6)
    # Every confidence is 0.7, in one bin, where 4 of 6 are right.
    assert result.ece == pytest.approx(abs(0.7 - 4 / 6))
    assert result.n == 6
    assert result.classes == CLASSES
    assert macro_f1(TRUTH, PREDICTED, 3) == pytest.approx(result.macro_f1)


def test_perfect_predictions_score_one() -> None:
    truth = [0, 1, 2, 3, 4, 5, 5, 0]
    classes = [plane.value for plane in Plane]
    result = evaluate(truth, confident(truth, 6, 1.0), classes)

    assert result.macro_f1 == result.balanced_accuracy == result.accuracy == 1.0
    assert result.ece == 0.0
    assert all(m.f1 == 1.0 for m in result.per_class.values())
    assert np.array_equal(np.diag(result.confusion), [2, 1, 1, 1, 1, 2])


def test_a_class_absent_from_truth_and_prediction_leaves_macro_f1_alone() -> None:
    with_absent = evaluate(TRUTH, confident(PREDICTED, 4, 0.7), (*CLASSES, "d"))
    without = evaluate(TRUTH, confident(PREDICTED, 3, 0.7), CLASSES)

    assert with_absent.macro_f1 == pytest.approx(without.macro_f1)
    assert with_absent.balanced_accuracy == pytest.approx(without.balanced_accuracy)
    assert with_absent.per_class["d"] == ClassMetrics(0.0, 0.0, 0.0, 0)
    assert macro_f1(TRUTH, PREDICTED, 4) == pytest.approx(without.macro_f1)


def test_a_class_predicted_but_never_true_scores_zero_in_macro_f1_only() -> None:
    # truth 0 0 1 1, prediction 0 2 1 1: class 2 has no support, one false positive.
    # F1: a 2·1·(1/2)/(3/2) = 2/3, b 1, c 0 -> macro 5/9; recalls a 1/2, b 1 -> balanced 3/4.
    result = evaluate([0, 0, 1, 1], confident([0, 2, 1, 1], 3, 0.9), CLASSES)

    assert result.per_class["c"] == ClassMetrics(0.0, 0.0, 0.0, 0)
    assert result.macro_f1 == pytest.approx(5 / 9)
    assert result.balanced_accuracy == pytest.approx(3 / 4)


def test_ece_of_crafted_examples() -> None:
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.55, 0.45]] * 2)
    # Four at confidence 0.9 (bin (0.867, 0.933]), three right: gap 0.15.
    # Two at confidence 0.55 (bin (0.533, 0.6]), none right: gap 0.55.
    # ECE = (4·0.15 + 2·0.55) / 6 = 1.7 / 6.
    assert expected_calibration_error(probabilities, [0, 0, 0, 1, 1, 1]) == pytest.approx(1.7 / 6)

    # Now both 0.55 are right: an under-confident bin (gap 0.45) beside the over-confident one.
    # ECE = (4·0.15 + 2·0.45) / 6 = 0.25; in a single bin the two would offset each other:
    # |5/6 right - 4.7/6 mean confidence| = 0.05.
    truth = [0, 0, 0, 1, 0, 0]
    assert expected_calibration_error(probabilities, truth) == pytest.approx(0.25)
    assert expected_calibration_error(probabilities, truth, bins=1) == pytest.approx(0.05)


def over_confident_logits(scale: float, n: int = 4000, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model (labels drawn from its own softmax), multiplied by ``scale``."""
    rng = np.random.default_rng(7)
    calibrated = rng.normal(0.0, 1.5, size=(n, k))
    calibrated[np.arange(n), rng.integers(0, k, n)] += 2.0
    probabilities = softmax(calibrated)
    labels = np.array([rng.choice(k, p=row) for row in probabilities])
    return calibrated * scale, labels


def test_temperature_scaling_recovers_the_over_confidence_factor_and_lowers_ece() -> None:
    logits, labels = over_confident_logits(scale=3.0)

    temperature = fit_temperature(logits, labels)

    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, temperature), labels)
    assert after < before / 3
    assert after < 0.04


def test_temperature_scaling_of_a_calibrated_model_is_close_to_one() -> None:
    logits, labels = over_confident_logits(scale=1.0)

    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_temperature_of_separable_logits_stays_finite_and_positive() -> None:
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [4.0, 1.0]])
    temperature = fit_temperature(logits, [0, 1, 0])

    assert 0 < temperature <= 0.011  # at the lower bound: NLL only falls as T -> 0


def test_softmax_rows_are_probabilities_and_temperature_flattens_them() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    sharp, flat = softmax(logits), softmax(logits, temperature=10.0)

    assert np.allclose(sharp.sum(axis=1), 1.0) and np.isfinite(sharp).all()
    assert flat[1].max() < sharp[1].max()
    assert softmax([[0.0, math.log(3.0)]]) == pytest.approx(np.array([[0.25, 0.75]]))
    with pytest.raises(ValueError, match="temperature"):
        softmax(logits, temperature=0.0)


def plain_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return type(value) in (str, int, float)


def test_to_dict_is_plain_json() -> None:
    result = evaluate(TRUTH, confident(PREDICTED, 3, 0.7), CLASSES)
    as_dict = result.to_dict()

    assert plain_json(as_dict)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["per_class"]["a"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    assert as_dict["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def decoded(png: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(png))
    picture.load()
    return picture


def test_the_figures_are_pngs_of_a_readable_size() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, 200)
    probabilities = softmax(rng.normal(size=(200, 6)) + 3 * np.eye(6)[truth])
    result = evaluate(truth, probabilities, [plane.value for plane in Plane])

    for png in (
        confusion_matrix_png(result, "phantom, held-out split"),
        reliability_diagram_png(probabilities, truth, "phantom, held-out split"),
    ):
        picture = decoded(png)
        assert picture.format == "PNG"
        assert 300 <= picture.width <= 2000 and 300 <= picture.height <= 2000
        grey = np.asarray(picture.convert("L"))
        assert grey.min() < 100 < 200 < grey.max()  # something is drawn on a light background


@pytest.mark.parametrize(
    ("truth", "probabilities", "classes", "message"),
    [
        ([], np.zeros((0, 3)), CLASSES, "no predictions"),
        ([0, 1], confident([0, 1, 2], 3, 0.7), CLASSES, "2 labels but 3"),
        ([0, 1, 2], confident([0, 1, 2], 3, 0.7), ("a", "b"), "2 class names but 3"),
        ([0, 1, 3], confident([0, 1, 2], 3, 0.7), CLASSES, r"\[0, 3\)"),
        ([0, -1, 2], confident([0, 1, 2], 3, 0.7), CLASSES, r"\[0, 3\)"),
        ([0, 1, 2], np.array([[2.0, 1.0, 0.5]] * 3), CLASSES, "sum to 1"),
        ([0, 1, 2], np.array([[1.5, -0.5, 0.0]] * 3), CLASSES, "non-negative"),
        ([0, 1, 2], np.array([0.2, 0.3, 0.5]), CLASSES, r"\(n, k\)"),
        ([0.0, 1.0, 2.0], confident([0, 1, 2], 3, 0.7), CLASSES, "integer"),
        ([0, 1, 2], confident([0, 1, 2], 3, 0.7), ("a", "a", "b"), "unique"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    truth: list[float], probabilities: np.ndarray, classes: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(truth, probabilities, classes)


def test_the_other_entry_points_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="2 labels but 3"):
        macro_f1([0, 1], [0, 1, 1], 3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        macro_f1([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="no labels"):
        macro_f1([], [], 2)
    with pytest.raises(ValueError, match="2 labels but 3"):
        fit_temperature(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), [0])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(confident([0], 2, 0.7), [0], bins=0)


def brute_force_macro_f1(truth: list[int], predicted: list[int]) -> float:
    scores = []
    for label in sorted(set(truth) | set(predicted)):
        tp = sum(t == p == label for t, p in zip(truth, predicted, strict=True))
        precision = tp / predicted.count(label) if label in predicted else 0.0
        recall = tp / truth.count(label) if label in truth else 0.0
        both = precision + recall
        scores.append(2 * precision * recall / both if both else 0.0)
    return sum(scores) / len(scores)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=2, max_value=7).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(
                st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60
            ),
        )
    )
)
def test_macro_f1_agrees_with_a_brute_force_count(case: tuple[int, list[tuple[int, int]]]) -> None:
    k, pairs = case
    truth, predicted = [t for t, _ in pairs], [p for _, p in pairs]

    assert macro_f1(truth, predicted, k) == pytest.approx(brute_force_macro_f1(truth, predicted))
