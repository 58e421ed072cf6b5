"""How well the served model does, measured from clinicians' feedback, with confidence intervals.

A served prediction may later get its true plane from a clinician. For the rows of a window that
did, `measured` takes the true class index, the predicted class index and the served probability
vector, and gives macro-F1, balanced accuracy, accuracy, per-class recall, the confusion matrix
and the expected calibration error, the four headline figures each with a percentile bootstrap
confidence interval (Efron & Tibshirani 1993, ch. 13). Pure functions on arrays: no bus, no
database.

Conventions, scikit-learn's wherever it has one, so every figure can be checked against it:

* A confusion matrix has rows for the truth and columns for the prediction, in class-index
  order. The metric functions take a stack ``(..., k, k)`` and give one figure per matrix, so
  that the bootstrap scores all its resamples in one call; a single matrix gives a 0-d array.
* F1 is ``2TP / (2TP + FP + FN)`` and recall ``TP / (TP + FN)``; a recall is undefined (NaN,
  ``None`` in `Performance.to_dict`) for a class with no support.
* Macro-F1 and balanced accuracy average over the classes present in the truth, i.e.
  ``f1_score(labels=<classes in y_true>, average="macro")`` and ``balanced_accuracy_score``.
  A class a window has predictions of but no confirmed case of has F1 = 0 whatever the model
  does; feedback windows are small and often lack a rare plane, so counting it would move the
  average with the window's make-up rather than with the model. Its wrong predictions still
  count, as misses of their true class. (The trainer's model card averages over the classes in
  the truth *or* the predictions, scikit-learn's default; the two agree whenever every
  predicted class was also confirmed at least once.)
* Each bootstrap resample is scored by the same statistic: averaged over the classes present
  in *its* truth, a subset of the window's, so a rare class that a resample happened not to
  draw neither counts as a 0 nor leaves its neighbours' F1 undefined.
* Expected calibration error (Guo et al. 2017, eq. 3) bins the *top* probability of each row,
  the confidence of the served prediction, into ``ECE_BINS`` = 15 equal-width bins
  ``(i/15, (i+1)/15]`` (the trainer's binning, so the two figures compare), and is the
  support-weighted mean of ``|accuracy - mean confidence|`` over the non-empty bins. It is
  biased upwards on small windows (a perfectly calibrated model still shows ECE > 0), and so
  is its bootstrap interval: read it as an upper figure, not as coverage of the true ECE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

ECE_BINS = 15
# float32 softmax rows sum to 1 within ~1e-6; anything further off is not a probability vector
# (logits passed by mistake, a sigmoid output, a row cut short).
ROW_SUM_TOLERANCE = 1e-3
# The served prediction is the top class; a float32 softmax can round two close classes to the
# same probability, so "top" allows for that much.
TIE_TOLERANCE = 1e-6
# Index sets drawn at once are (resamples, rows) int64: bound them to ~16 MB so a window of
# 100,000 rows does not ask for 800 MB.
RESAMPLE_CHUNK_ROWS = 2_000_000

# A confusion matrix or a stack of them: counted (int) or, for an estimate, expected (float).
Counts = NDArray[np.integer[Any]] | NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Interval:
    """A figure and its interval; ``low <= value <= high`` is usual but not guaranteed."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Performance:
    classes: tuple[str, ...]
    n: int
    macro_f1: Interval
    balanced_accuracy: Interval
    accuracy: Interval
    ece: Interval
    recall: dict[str, float | None]  # None: no confirmed case of the class in the window
    support: dict[str, int]
    confusion: list[list[int]]  # rows: truth, columns: prediction, in the order of `classes`
    averaged_over: tuple[str, ...]  # the classes macro-F1 and balanced accuracy average over
    level: float
    bootstrap: int
    seed: int
    ece_bins: int = ECE_BINS

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, dicts, str, int, float, None) for a report row."""
        return {
            "classes": list(self.classes),
            "n": self.n,
            "macro_f1": self.macro_f1.to_dict(),
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "accuracy": self.accuracy.to_dict(),
            "ece": self.ece.to_dict(),
            "recall": dict(self.recall),
            "support": dict(self.support),
            "confusion": [list(row) for row in self.confusion],
            "averaged_over": list(self.averaged_over),
            "level": self.level,
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "ece_bins": self.ece_bins,
        }


def measured(
    truth: ArrayLike,
    predicted: ArrayLike,
    probabilities: ArrayLike,
    classes: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Performance:
    """Figures of one window of confirmed predictions, with ``level`` percentile intervals.

    ``truth`` and ``predicted`` are class indices into ``classes``, ``probabilities`` the served
    (n, k) softmax. Raises ValueError on empty or mismatched input, indices outside the classes,
    rows that are not probability vectors, or a prediction that is not its row's top class (the
    sign of columns and names in different orders).
    """
    if bootstrap < 1:
        raise ValueError(f"bootstrap must be at least 1 resample, got {bootstrap}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    probs = probability_rows(probabilities)
    k = probs.shape[1]
    true, pred = class_indices(truth, k), class_indices(predicted, k)
    if not true.shape[0] == pred.shape[0] == probs.shape[0]:
        raise ValueError(
            f"{true.shape[0]} true classes, {pred.shape[0]} predictions "
            f"and {probs.shape[0]} probability rows"
        )
    _check_names(classes, k)
    top = probs.max(axis=1)
    confidence = probs[np.arange(probs.shape[0]), pred]
    if (confidence < top - TIE_TOLERANCE).any():
        row = int(np.argmax(confidence < top - TIE_TOLERANCE))
        raise ValueError(
            f"row {row} predicts class {int(pred[row])} but its top probability is class "
            f"{int(probs[row].argmax())}: are the columns in the order of `classes`?"
        )

    confusion = confusion_matrix(true, pred, k)
    recall = per_class_recall(confusion)
    support = confusion.sum(axis=1)
    point = {
        "macro_f1": float(macro_f1(confusion)),
        "balanced_accuracy": float(balanced_accuracy(confusion)),
        "accuracy": float(accuracy(confusion)),
        "ece": expected_calibration_error(true, pred, probs),
    }
    resampled = _bootstrap(true, pred, confidence, k, bootstrap, np.random.default_rng(seed))
    tail = (1 - level) / 2
    intervals = {
        name: Interval(value, *(float(q) for q in np.quantile(resampled[name], [tail, 1 - tail])))
        for name, value in point.items()
    }
    return Performance(
        classes=tuple(classes),
        n=int(true.shape[0]),
        macro_f1=intervals["macro_f1"],
        balanced_accuracy=intervals["balanced_accuracy"],
        accuracy=intervals["accuracy"],
        ece=intervals["ece"],
        recall={
            name: None if np.isnan(recall[i]) else float(recall[i])
            for i, name in enumerate(classes)
        },
        support={name: int(support[i]) for i, name in enumerate(classes)},
        confusion=confusion.tolist(),
        averaged_over=tuple(name for i, name in enumerate(classes) if support[i] > 0),
        level=level,
        bootstrap=bootstrap,
        seed=seed,
    )


def confusion_matrix(
    truth: NDArray[np.integer], predicted: NDArray[np.integer], num_classes: int
) -> NDArray[np.int64]:
    """Counts ``(..., k, k)``: one matrix per leading index of ``truth``/``predicted``.

    The two broadcast against each other, so ``(B, n)`` resampled truths with an ``(n,)``
    prediction give B matrices. One `np.bincount` over ``k²·b + k·t + p`` counts them all.
    """
    true, pred = np.broadcast_arrays(
        np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    )
    leading = true.shape[:-1]
    stacks = int(np.prod(leading))
    cells = num_classes * num_classes
    offset = (np.arange(stacks, dtype=np.int64) * cells).reshape(*leading, 1)
    flat = np.bincount((offset + true * num_classes + pred).ravel(), minlength=stacks * cells)
    return flat.reshape(*leading, num_classes, num_classes).astype(np.int64)


def per_class_recall(confusion: Counts) -> NDArray[np.float64]:
    """``(..., k)``; NaN for a class with no support."""
    hits = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    support = confusion.sum(axis=-1).astype(np.float64)
    result: NDArray[np.float64] = np.divide(
        hits, support, out=np.full_like(hits, np.nan), where=support > 0
    )
    return result


def per_class_f1(confusion: Counts) -> NDArray[np.float64]:
    """``(..., k)``: ``2TP / (2TP + FP + FN)``, NaN for a class neither true nor predicted."""
    hits = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    # 2TP + FP + FN = (TP + FP) + (TP + FN): predicted count plus support.
    denominator = (confusion.sum(axis=-2) + confusion.sum(axis=-1)).astype(np.float64)
    result: NDArray[np.float64] = np.divide(
        2 * hits, denominator, out=np.full_like(hits, np.nan), where=denominator > 0
    )
    return result


def macro_f1(confusion: Counts) -> NDArray[np.float64]:
    """Mean F1 over the classes present in each matrix's truth (see the module docstring)."""
    return _mean_over_present(per_class_f1(confusion), confusion.sum(axis=-1) > 0)


def balanced_accuracy(confusion: Counts) -> NDArray[np.float64]:
    """Mean recall over the classes present in each matrix's truth."""
    return _mean_over_present(per_class_recall(confusion), confusion.sum(axis=-1) > 0)


def accuracy(confusion: Counts) -> NDArray[np.float64]:
    total = confusion.sum(axis=(-2, -1)).astype(np.float64)
    hits = np.trace(confusion, axis1=-2, axis2=-1).astype(np.float64)
    result: NDArray[np.float64] = np.divide(
        hits, total, out=np.full_like(hits, np.nan), where=total > 0
    )
    return result


def expected_calibration_error(
    truth: ArrayLike, predicted: ArrayLike, probabilities: ArrayLike, bins: int = ECE_BINS
) -> float:
    """ECE of the top probability in ``bins`` equal-width bins (see the module docstring)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    probs = probability_rows(probabilities)
    true = class_indices(truth, probs.shape[1])
    pred = class_indices(predicted, probs.shape[1])
    if not true.shape[0] == pred.shape[0] == probs.shape[0]:
        raise ValueError("truth, predictions and probability rows differ in length")
    confidence = probs.max(axis=1)
    # Per bin, |Σ correct − Σ confidence| is |accuracy − mean confidence| × count.
    excess = (pred == true) - confidence
    per_bin = np.bincount(confidence_bins(confidence, bins), weights=excess, minlength=bins)
    return float(np.abs(per_bin).sum() / true.shape[0])


def confidence_bins(confidence: NDArray[np.float64], bins: int = ECE_BINS) -> NDArray[np.int64]:
    """Bin index of each confidence: ``(i/B, (i+1)/B]`` is bin i, and 0 falls in bin 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(index, 0, bins - 1).astype(np.int64)


def probability_rows(probabilities: ArrayLike) -> NDArray[np.float64]:
    """``probabilities`` as float64 (n, k), n ≥ 1 and k ≥ 2; ValueError if they are not."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (n, k), got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise ValueError("no predictions in the window")
    if probs.shape[1] < 2:
        raise ValueError(f"need at least 2 classes, got {probs.shape[1]}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    worst = float(np.abs(probs.sum(axis=1) - 1.0).max())
    if worst > ROW_SUM_TOLERANCE:
        raise ValueError(f"probability rows must sum to 1; one is off by {worst:.3g}")
    return probs


def class_indices(indices: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """One-dimensional integer class indices in ``range(num_classes)``; ValueError otherwise."""
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(f"class indices must be one-dimensional, got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("no class indices in the window")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"class indices must be integers, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"class indices must lie in [0, {num_classes}), got [{low}, {high}]")
    return array.astype(np.int64)


def _check_names(classes: Sequence[str], k: int) -> None:
    if len(classes) != k:
        raise ValueError(f"{len(classes)} class names but {k} probability columns")
    if len(set(classes)) != k:
        raise ValueError(f"class names are not unique: {list(classes)}")


def _mean_over_present(
    values: NDArray[np.float64], present: NDArray[np.bool_]
) -> NDArray[np.float64]:
    counted = present & ~np.isnan(values)
    total = np.where(counted, values, 0.0).sum(axis=-1)
    count = counted.sum(axis=-1).astype(np.float64)
    result: NDArray[np.float64] = np.divide(
        total, count, out=np.full_like(total, np.nan), where=count > 0
    )
    return result


def _bootstrap(
    truth: NDArray[np.int64],
    predicted: NDArray[np.int64],
    confidence: NDArray[np.float64],
    k: int,
    resamples: int,
    rng: np.random.Generator,
) -> dict[str, NDArray[np.float64]]:
    """Each headline figure on ``resamples`` index sets drawn with replacement, chunk by chunk."""
    n = truth.shape[0]
    bin_of = confidence_bins(confidence)
    excess = (truth == predicted) - confidence
    figures: dict[str, list[NDArray[np.float64]]] = {
        "macro_f1": [],
        "balanced_accuracy": [],
        "accuracy": [],
        "ece": [],
    }
    per_chunk = max(1, RESAMPLE_CHUNK_ROWS // n)
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        rows = rng.integers(0, n, size=(b, n))
        confusion = confusion_matrix(truth[rows], predicted[rows], k)
        figures["macro_f1"].append(macro_f1(confusion))
        figures["balanced_accuracy"].append(balanced_accuracy(confusion))
        figures["accuracy"].append(accuracy(confusion))
        offsets = np.arange(b, dtype=np.int64)[:, None] * ECE_BINS
        per_bin = np.bincount(
            (offsets + bin_of[rows]).ravel(),
            weights=excess[rows].ravel(),
            minlength=b * ECE_BINS,
        )
        figures["ece"].append(np.abs(per_bin.reshape(b, ECE_BINS)).sum(axis=1) / n)
    return {name: np.concatenate(parts) for name, parts in figures.items()}
