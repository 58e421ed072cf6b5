"""Classification and calibration figures of a k-class classifier, written once.

The trainer scores a held-out split with these for its model cards, the monitor a window of
clinicians' feedback for its reports; both must mean the same thing by "macro-F1" or "ECE".
Pure functions on arrays.

Conventions, scikit-learn's wherever it has one, so every figure can be checked against it:

* A confusion matrix has rows for the truth and columns for the prediction, in class-index
  order. The metric functions take a stack ``(..., k, k)`` and give one figure per matrix, so
  that a bootstrap scores all its resamples in one call; a single matrix gives a 0-d array.
  A matrix may hold expected (float) counts as well as counted ones.
* Precision is ``TP / (TP + FP)``, recall ``TP / (TP + FN)``, F1 ``2TP / (2TP + FP + FN)``
  (which equals ``2PR / (P + R)`` wherever that is defined). Where the denominator is 0 the
  ratio is undefined and given as NaN; a caller that wants scikit-learn's ``zero_division=0``
  replaces the NaN itself.
* Macro-F1 averages over the classes present in the truth (``over="truth"``, i.e.
  ``f1_score(labels=<classes in y_true>, average="macro")``) or in the truth *or* the
  predictions (``over="truth or prediction"``, ``f1_score(average="macro")``). The two differ
  only when a class is predicted but never true: its F1 is 0 whatever the model does. A class
  absent from both says nothing either way and is never averaged over. The caller chooses,
  every time: the trainer's model card takes scikit-learn's default, the monitor's feedback
  windows (small, often short of a rare plane) the truth.
* Balanced accuracy is the mean recall over the classes present in the truth
  (``balanced_accuracy_score``): a prediction of a class with no support costs the recall of
  the true class, and is not counted twice.
* Expected calibration error (Guo et al. 2017, eq. 3) bins the confidence of each prediction
  into ``ECE_BINS`` = 15 equal-width bins ``(i/15, (i+1)/15]`` and is the support-weighted mean
  of ``|accuracy - mean confidence|`` over the non-empty bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

ECE_BINS = 15
# float32 softmax rows sum to 1 within ~1e-6; anything further off is not a probability vector
# (logits passed by mistake, a sigmoid output, a row cut short).
ROW_SUM_TOLERANCE = 1e-3

# A confusion matrix or a stack of them: counted (int) or expected (float).
Counts = NDArray[np.integer[Any]] | NDArray[np.floating[Any]]
# The classes a macro average is over (see the module docstring).
Over = Literal["truth", "truth or prediction"]


@dataclass(frozen=True, eq=False)  # arrays compare elementwise, not to one bool
class Reliability:
    """Per confidence bin: how many predictions, their mean confidence, their accuracy."""

    count: NDArray[np.int64]
    confidence: NDArray[np.float64]  # 0 where the bin is empty
    accuracy: NDArray[np.float64]  # 0 where the bin is empty


def probability_rows(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``probabilities`` as float64 (n, k), n ≥ 1 and k ≥ 2; ValueError if they are not."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (n, k), got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("no predictions to evaluate")
    if probs.shape[1] < 2:
        raise ValueError(f"need at least 2 classes, got {probs.shape[1]}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    worst = float(np.abs(probs.sum(axis=1) - 1.0).max())
    if worst > ROW_SUM_TOLERANCE:
        raise ValueError(f"probability rows must sum to 1; one is off by {worst:.3g}")
    return probs


def class_indices(
    indices: ArrayLike, num_classes: int, *, name: str = "class indices"
) -> NDArray[np.int64]:
    """One-dimensional integer class indices in ``range(num_classes)``; ValueError otherwise,
    naming them ``name`` ("labels", "class indices")."""
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"no {name} to evaluate")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got [{low}, {high}]")
    return array.astype(np.int64)


def check_class_names(classes: Sequence[str], num_classes: int) -> None:
    """ValueError unless ``classes`` names each of ``num_classes`` probability columns once."""
    if len(classes) != num_classes:
        raise ValueError(f"{len(classes)} class names but {num_classes} probability columns")
    if len(set(classes)) != num_classes:
        raise ValueError(f"class names are not unique: {list(classes)}")


def confusion_matrix(truth: ArrayLike, predicted: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """Counts ``(..., k, k)``: one matrix per leading index of ``truth``/``predicted``.

    The two broadcast against each other, so ``(B, n)`` resampled truths with an ``(n,)``
    prediction give B matrices. Indices are taken as given: check them with `class_indices`.
    """
    true, pred = np.broadcast_arrays(
        np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    )
    counts = _stacked_bincount(true * num_classes + pred, num_classes * num_classes)
    return counts.reshape(*true.shape[:-1], num_classes, num_classes).astype(np.int64)


def per_class_precision(confusion: Counts) -> NDArray[np.float64]:
    """``(..., k)``; NaN for a class never predicted."""
    return _ratio(_hits(confusion), confusion.sum(axis=-2))


def per_class_recall(confusion: Counts) -> NDArray[np.float64]:
    """``(..., k)``; NaN for a class with no support."""
    return _ratio(_hits(confusion), confusion.sum(axis=-1))


def per_class_f1(confusion: Counts) -> NDArray[np.float64]:
    """``(..., k)``: ``2TP / (2TP + FP + FN)``, NaN for a class neither true nor predicted."""
    # 2TP + FP + FN = (TP + FP) + (TP + FN): predicted count plus support.
    return _ratio(2 * _hits(confusion), confusion.sum(axis=-2) + confusion.sum(axis=-1))


def present(confusion: Counts, over: Over) -> NDArray[np.bool_]:
    """``(..., k)``: the classes a macro average ``over`` the truth, or the truth or the
    predictions, counts."""
    true: NDArray[np.bool_] = confusion.sum(axis=-1) > 0
    if over == "truth":
        return true
    if over == "truth or prediction":
        predicted: NDArray[np.bool_] = confusion.sum(axis=-2) > 0
        return true | predicted
    raise ValueError(f"over must be 'truth' or 'truth or prediction', got {over!r}")


def macro_f1(confusion: Counts, *, over: Over) -> NDArray[np.float64]:
    """Mean F1 over the classes present in each matrix's truth, or its truth or predictions
    (see the module docstring)."""
    return _mean_over(per_class_f1(confusion), present(confusion, over))


def balanced_accuracy(confusion: Counts) -> NDArray[np.float64]:
    """Mean recall over the classes present in each matrix's truth."""
    return _mean_over(per_class_recall(confusion), present(confusion, "truth"))


def accuracy(confusion: Counts) -> NDArray[np.float64]:
    """The share on the diagonal; NaN for an empty matrix."""
    return _ratio(
        np.trace(confusion, axis1=-2, axis2=-1), confusion.sum(axis=(-2, -1)).astype(np.float64)
    )


def confidence_bins(confidence: ArrayLike, bins: int = ECE_BINS) -> NDArray[np.int64]:
    """Bin index of each confidence: ``(i/B, (i+1)/B]`` is bin i, and 0 falls in bin 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="left") - 1
    return np.clip(index, 0, bins - 1).astype(np.int64)


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, bins: int = ECE_BINS
) -> NDArray[np.float64]:
    """ECE ``(...)`` of the predictions along the last axis: each one's confidence (the
    probability it was given) and whether it was right (see the module docstring)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    conf = np.asarray(confidence, dtype=np.float64)
    # Per bin, |Σ correct − Σ confidence| is |accuracy − mean confidence| × count.
    excess = np.asarray(correct, dtype=np.float64) - conf
    per_bin = _stacked_bincount(confidence_bins(conf, bins), bins, weights=excess)
    result: NDArray[np.float64] = np.abs(per_bin).sum(axis=-1) / conf.shape[-1]
    return result


def reliability(confidence: ArrayLike, correct: ArrayLike, bins: int = ECE_BINS) -> Reliability:
    """The reliability diagram's table (Guo et al. 2017, fig. 1) of one set of predictions."""
    conf = np.asarray(confidence, dtype=np.float64)
    index = confidence_bins(conf, bins)
    count = np.bincount(index, minlength=bins)
    total_confidence = np.bincount(index, weights=conf, minlength=bins)
    total_correct = np.bincount(
        index, weights=np.asarray(correct, dtype=np.float64), minlength=bins
    )
    seen = count > 0
    zeros = np.zeros(bins, dtype=np.float64)
    return Reliability(
        count=count.astype(np.int64),
        confidence=np.divide(total_confidence, count, out=zeros.copy(), where=seen),
        accuracy=np.divide(total_correct, count, out=zeros.copy(), where=seen),
    )


def _stacked_bincount(
    index: NDArray[np.int64], size: int, weights: NDArray[np.float64] | None = None
) -> NDArray[Any]:
    """``np.bincount`` of each row of ``index`` ``(..., n)`` into ``(..., size)``, in one call
    over ``size·row + index``."""
    leading = index.shape[:-1]
    rows = int(np.prod(leading))
    offset = (np.arange(rows, dtype=np.int64) * size).reshape(*leading, 1)
    flat = np.bincount(
        (offset + index).ravel(),
        weights=None if weights is None else weights.ravel(),
        minlength=rows * size,
    )
    return flat.reshape(*leading, size)


def _hits(confusion: Counts) -> NDArray[np.float64]:
    return np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)


def _ratio(numerator: NDArray[Any], denominator: NDArray[Any]) -> NDArray[np.float64]:
    top = np.asarray(numerator, dtype=np.float64)
    bottom = np.asarray(denominator, dtype=np.float64)
    result: NDArray[np.float64] = np.divide(
        top, bottom, out=np.full_like(top, np.nan), where=bottom > 0
    )
    return result


def _mean_over(values: NDArray[np.float64], counted: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Mean of ``values`` over the last axis where ``counted`` (and defined); NaN if nowhere."""
    counted = counted & ~np.isnan(values)
    total = np.where(counted, values, 0.0).sum(axis=-1)
    return _ratio(total, counted.sum(axis=-1))
