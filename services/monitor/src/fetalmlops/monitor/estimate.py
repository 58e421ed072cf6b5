"""How well the served model is probably doing, estimated from its probabilities alone.

Feedback is slow and partial; the probabilities of every served prediction are there at once.
If they are calibrated (the trainer temperature-scales the model, so the served softmax is), a
row whose top class has probability 0.8 is right 80 % of the time, and the whole confusion
matrix can be expected without a label: confidence-based performance estimation, CBPE, as
NannyML does it (docs "How it works: CBPE"), here for one k-class image classifier.

* The expected confusion matrix is ``E[C[i, j]] = Σ_rows p_row[i] · 1[pred_row = j]`` (rows the
  truth, columns the prediction, as in `fetalmlops.metrics.classification`).
* Expected accuracy is its trace over n, i.e. the mean top probability. Whether each row is
  right is a Bernoulli draw with its own p, so the count right is Poisson-binomial and the
  accuracy's standard error is ``sqrt(Σ p(1 − p)) / n``; the interval is the normal one.
* Expected macro-F1 is CBPE's: per class, F1 from the expected TP, FP and FN of the expected
  matrix, averaged over the classes with any expected support (every class, for a softmax).
  Its interval comes from simulation: ``draws`` sets of labels drawn from the probabilities,
  each scored exactly as `fetalmlops.monitor.performance` scores feedback (macro-F1 over the
  classes present in the drawn truth).

Both intervals are where the *realised* figure of these same rows should land if the
probabilities are calibrated: they carry the spread of the labels, not an uncertainty of the
probabilities themselves. A realised figure outside is evidence of miscalibration (or of a
shift the probabilities do not see); `gap` reports it. CBPE's F1 is a ratio of expectations,
not the expectation of a ratio, and counts a class the window barely holds that the realised
figure would often leave out, so on small windows with rare classes it sits slightly off the
centre of its own interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fetalmlops.metrics import classification
from fetalmlops.monitor.performance import Interval, Performance

# Simulated labels are drawn as (draws, rows, classes) comparisons: bound them to ~16 MB.
SIMULATION_CHUNK_CELLS = 16_000_000


@dataclass(frozen=True)
class Estimate:
    classes: tuple[str, ...]
    n: int
    accuracy: Interval  # normal interval, value ± z · accuracy_se
    accuracy_se: float
    macro_f1: Interval  # CBPE's value; percentiles of macro-F1 on simulated labels
    per_class_f1: dict[str, float | None]  # None: no expected support
    expected_confusion: list[list[float]]  # rows: truth, columns: prediction
    predicted: dict[str, int]  # served predictions per class: which rows were estimated
    level: float
    draws: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, dicts, str, int, float, None) for a report row."""
        return {
            "classes": list(self.classes),
            "n": self.n,
            "accuracy": self.accuracy.to_dict(),
            "accuracy_se": self.accuracy_se,
            "macro_f1": self.macro_f1.to_dict(),
            "per_class_f1": dict(self.per_class_f1),
            "expected_confusion": [list(row) for row in self.expected_confusion],
            "predicted": dict(self.predicted),
            "level": self.level,
            "draws": self.draws,
            "seed": self.seed,
        }


def estimated(
    probabilities: ArrayLike,
    classes: Sequence[str],
    *,
    draws: int = 500,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """CBPE of the served (n, k) softmax rows, each predicting its top class.

    Raises ValueError on empty input, rows that are not probability vectors, or class names
    that do not match the columns.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    probs = classification.probability_rows(probabilities)
    # Within the tolerance rows may be off by 1e-3; the expectations below assume exact sums.
    probs = probs / probs.sum(axis=1, keepdims=True)
    n, k = probs.shape
    if len(classes) != k or len(set(classes)) != k:
        raise ValueError(f"need {k} unique class names, got {list(classes)}")
    predicted = probs.argmax(axis=1)

    expected = probs.T @ np.eye(k)[predicted]
    top = probs[np.arange(n), predicted]
    accuracy = float(top.mean())
    se = math.sqrt(float((top * (1 - top)).sum())) / n
    z = NormalDist().inv_cdf((1 + level) / 2)
    f1 = classification.per_class_f1(expected)

    simulated = _simulated_macro_f1(probs, predicted, draws, np.random.default_rng(seed))
    tail = (1 - level) / 2
    low, high = (float(q) for q in np.quantile(simulated, [tail, 1 - tail]))
    counts = np.bincount(predicted, minlength=k)
    return Estimate(
        classes=tuple(classes),
        n=n,
        accuracy=Interval(accuracy, max(0.0, accuracy - z * se), min(1.0, accuracy + z * se)),
        accuracy_se=se,
        macro_f1=Interval(float(classification.macro_f1(expected, over="truth")), low, high),
        per_class_f1={
            name: None if np.isnan(f1[i]) else float(f1[i]) for i, name in enumerate(classes)
        },
        expected_confusion=expected.tolist(),
        predicted={name: int(counts[i]) for i, name in enumerate(classes)},
        level=level,
        draws=draws,
        seed=seed,
    )


def gap(estimate: Estimate, performance: Performance) -> dict[str, Any]:
    """Realised minus estimated accuracy and macro-F1 of the same rows, and whether each
    realised figure lies inside the estimate's interval.

    The intervals are for exactly the rows that were estimated; feedback usually covers only
    some served predictions, so estimate those rows, not the whole window. ValueError when the
    two disagree on the classes or on how many rows predicted each class.
    """
    if estimate.classes != performance.classes:
        raise ValueError(
            f"estimate is over {list(estimate.classes)}, "
            f"performance over {list(performance.classes)}"
        )
    confirmed = np.asarray(performance.confusion).sum(axis=0)
    predicted = dict(zip(performance.classes, (int(c) for c in confirmed), strict=True))
    if estimate.n != performance.n or estimate.predicted != predicted:
        raise ValueError(
            f"not the same rows: estimated {estimate.n} predictions {estimate.predicted}, "
            f"measured {performance.n} predictions {predicted}; estimate the rows with feedback"
        )
    figures = {
        "accuracy": (estimate.accuracy, performance.accuracy.value),
        "macro_f1": (estimate.macro_f1, performance.macro_f1.value),
    }
    return {
        "n": estimate.n,
        "level": estimate.level,
        **{
            name: {
                "estimated": interval.value,
                "realised": realised,
                "gap": realised - interval.value,
                "low": interval.low,
                "high": interval.high,
                "inside": interval.low <= realised <= interval.high,
            }
            for name, (interval, realised) in figures.items()
        },
    }


def _simulated_macro_f1(
    probs: NDArray[np.float64],
    predicted: NDArray[np.int64],
    draws: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Macro-F1 of the fixed predictions against ``draws`` label sets drawn from ``probs``."""
    n, k = probs.shape
    cumulative = np.cumsum(probs, axis=1)
    per_chunk = max(1, SIMULATION_CHUNK_CELLS // (n * k))
    scores = []
    for start in range(0, draws, per_chunk):
        d = min(per_chunk, draws - start)
        uniform = rng.random((d, n, 1))
        # Inverse-CDF sampling; the clip guards a cumulative sum that rounds to just below 1.
        labels = np.minimum((uniform >= cumulative).sum(axis=2), k - 1)
        confusion = classification.confusion_matrix(labels, predicted, k)
        scores.append(classification.macro_f1(confusion, over="truth"))
    return np.concatenate(scores)
