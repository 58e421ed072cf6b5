"""How well the served model does, measured from clinicians' feedback, with confidence intervals.

A served prediction may later get its true plane from a clinician. For the rows of a window that
did, `measured` takes the true class index, the predicted class index and the served probability
vector, and gives macro-F1, balanced accuracy, accuracy, per-class recall, the confusion matrix
and the expected calibration error, the four headline figures each with a percentile bootstrap
confidence interval (Efron & Tibshirani 1993, ch. 13). Pure functions on arrays: no bus, no
database.

The figures are `fetalmlops.metrics.classification`'s, as the trainer's model cards give them
(with scikit-learn's conventions, so every figure can be checked against it); the choices a
feedback window makes among them:

* A recall is undefined (NaN, ``None`` in `Performance.to_dict`) for a class with no support.
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
* Expected calibration error bins the *top* probability of each row, the confidence of the
  served prediction, into ``ECE_BINS`` = 15 equal-width bins (the trainer's binning, so the two
  figures compare). It is biased upwards on small windows (a perfectly calibrated model still
  shows ECE > 0), and so is its bootstrap interval: read it as an upper figure, not as
  coverage of the true ECE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fetalmlops.metrics import classification

# Re-exported: the reports bin their reliability diagram as the ECE here does.
from fetalmlops.metrics.classification import ECE_BINS as ECE_BINS
from fetalmlops.metrics.classification import confidence_bins as confidence_bins

# The served prediction is the top class; a float32 softmax can round two close classes to the
# same probability, so "top" allows for that much.
TIE_TOLERANCE = 1e-6
# Index sets drawn at once are (resamples, rows) int64: bound them to ~16 MB so a window of
# 100,000 rows does not ask for 800 MB.
RESAMPLE_CHUNK_ROWS = 2_000_000


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
    probs = classification.probability_rows(probabilities)
    k = probs.shape[1]
    true = classification.class_indices(truth, k)
    pred = classification.class_indices(predicted, k)
    if not true.shape[0] == pred.shape[0] == probs.shape[0]:
        raise ValueError(
            f"{true.shape[0]} true classes, {pred.shape[0]} predictions "
            f"and {probs.shape[0]} probability rows"
        )
    classification.check_class_names(classes, k)
    top = probs.max(axis=1)
    confidence = probs[np.arange(probs.shape[0]), pred]
    if (confidence < top - TIE_TOLERANCE).any():
        row = int(np.argmax(confidence < top - TIE_TOLERANCE))
        raise ValueError(
            f"row {row} predicts class {int(pred[row])} but its top probability is class "
            f"{int(probs[row].argmax())}: are the columns in the order of `classes`?"
        )

    confusion = classification.confusion_matrix(true, pred, k)
    recall = classification.per_class_recall(confusion)
    support = confusion.sum(axis=1)
    point = {
        "macro_f1": float(classification.macro_f1(confusion, over="truth")),
        "balanced_accuracy": float(classification.balanced_accuracy(confusion)),
        "accuracy": float(classification.accuracy(confusion)),
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


def expected_calibration_error(
    truth: ArrayLike, predicted: ArrayLike, probabilities: ArrayLike, bins: int = ECE_BINS
) -> float:
    """ECE of the top probability in ``bins`` equal-width bins (see the module docstring)."""
    probs = classification.probability_rows(probabilities)
    true = classification.class_indices(truth, probs.shape[1])
    pred = classification.class_indices(predicted, probs.shape[1])
    if not true.shape[0] == pred.shape[0] == probs.shape[0]:
        raise ValueError("truth, predictions and probability rows differ in length")
    return float(classification.expected_calibration_error(probs.max(axis=1), pred == true, bins))


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
    correct = truth == predicted
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
        confusion = classification.confusion_matrix(truth[rows], predicted[rows], k)
        figures["macro_f1"].append(classification.macro_f1(confusion, over="truth"))
        figures["balanced_accuracy"].append(classification.balanced_accuracy(confusion))
        figures["accuracy"].append(classification.accuracy(confusion))
        figures["ece"].append(
            classification.expected_calibration_error(confidence[rows], correct[rows])
        )
    return {name: np.concatenate(parts) for name, parts in figures.items()}
