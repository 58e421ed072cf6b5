"""Clinical evaluation of a plane classifier: what goes into its model card and the registry.

Pure functions on plain arrays: the training loop, the registry and the benchmarks call them
with the labels and the softmax probabilities of a held-out split, and nothing here touches a
model, a file or a database.

The figures are `fetalmlops.metrics.classification`'s, which the monitor's reports share;
the choices a model card makes among its conventions:

* An undefined ratio is 0 (scikit-learn's ``zero_division=0``): precision of a class never
  predicted, recall of a class never seen, and the F1 of either.
* Macro-F1 averages over the classes seen in the truth *or* the predictions (scikit-learn's
  ``f1_score(average="macro")`` without ``labels=``). A class absent from both says nothing of
  the model and would only pull the average down because a split happened to lack it; it is
  still listed in ``per_class``, with zeros and ``support=0``. (The monitor averages over the
  classes in the truth alone; the two agree whenever every predicted class was also true.)
* Balanced accuracy is the mean recall over the classes present in the truth
  (``balanced_accuracy_score``).
* Expected calibration error bins the top-class confidence into ``ECE_BINS`` = 15 equal-width
  bins (Guo et al. 2017, eq. 3), the binning the monitor uses, so the two figures compare.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from fetalmlops.metrics import classification

# The model card names the bin count; it is the shared one.
ECE_BINS = classification.ECE_BINS
# Temperature scaling searches T in [1/100, 100]. A fit at a bound means the validation set is
# separable by the model (NLL keeps falling as T -> 0) or the logits carry no signal.
TEMPERATURE_BOUNDS = (1e-2, 1e2)


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    macro_f1: float
    balanced_accuracy: float
    accuracy: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # rows: truth, columns: prediction, in the order of `classes`
    ece: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, dicts, str, int, float) for a model card or a JSON column."""
        return {**asdict(self), "classes": list(self.classes)}


def evaluate(
    y_true: Sequence[int] | NDArray[np.integer], probabilities: ArrayLike, classes: Sequence[str]
) -> Evaluation:
    """Metrics of the top-class predictions of ``probabilities`` (n, k) against ``y_true``.

    Raises ValueError on empty input, mismatched shapes, labels outside ``range(k)`` or rows
    that are not probability vectors.
    """
    probs, labels = _checked(probabilities, y_true)
    classification.check_class_names(classes, probs.shape[1])

    confusion = classification.confusion_matrix(labels, probs.argmax(axis=1), probs.shape[1])
    # scikit-learn's zero_division=0: an undefined ratio is reported as 0.
    precision, recall, f1 = (
        np.nan_to_num(ratios, nan=0.0)
        for ratios in (
            classification.per_class_precision(confusion),
            classification.per_class_recall(confusion),
            classification.per_class_f1(confusion),
        )
    )
    support = confusion.sum(axis=1)
    return Evaluation(
        classes=tuple(classes),
        macro_f1=float(classification.macro_f1(confusion, over="truth or prediction")),
        balanced_accuracy=float(classification.balanced_accuracy(confusion)),
        accuracy=float(classification.accuracy(confusion)),
        per_class={
            name: ClassMetrics(
                precision=float(precision[i]),
                recall=float(recall[i]),
                f1=float(f1[i]),
                support=int(support[i]),
            )
            for i, name in enumerate(classes)
        },
        confusion=confusion.tolist(),
        ece=_ece(probs, labels, ECE_BINS),
        n=int(labels.shape[0]),
    )


def macro_f1(
    y_true: Sequence[int] | NDArray[np.integer],
    y_pred: Sequence[int] | NDArray[np.integer],
    num_classes: int,
) -> float:
    """Macro-F1 over the classes seen in either argument (see the module docstring)."""
    truth = classification.class_indices(y_true, num_classes, name="labels")
    predicted = classification.class_indices(y_pred, num_classes, name="labels")
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.shape[0]} labels but {predicted.shape[0]} predictions")
    confusion = classification.confusion_matrix(truth, predicted, num_classes)
    return float(classification.macro_f1(confusion, over="truth or prediction"))


def expected_calibration_error(
    probabilities: ArrayLike, y_true: Sequence[int] | NDArray[np.integer], bins: int = ECE_BINS
) -> float:
    """ECE of the top-class predictions of ``probabilities`` (n, k) against ``y_true``."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    return _ece(*_checked(probabilities, y_true), bins)


def softmax(logits: ArrayLike, temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise softmax of ``logits / temperature``, in float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    shifted = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    result: NDArray[np.float64] = shifted / shifted.sum(axis=-1, keepdims=True)
    return result


def fit_temperature(logits: ArrayLike, y_true: Sequence[int] | NDArray[np.integer]) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search on log T
    within ``TEMPERATURE_BOUNDS`` finds the optimum without a learning rate or a start point to
    tune, and gives the same answer on every run.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must be (n, k) with n >= 1 and k >= 2, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits contain NaN or infinity")
    labels = classification.class_indices(y_true, z.shape[1], name="labels")
    if labels.shape[0] != z.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {z.shape[0]} logit rows")
    if np.all(np.ptp(z, axis=1) == 0):
        return 1.0  # every temperature gives the same uniform softmax
    target = z[np.arange(z.shape[0]), labels]

    def nll(log_t: float) -> float:
        scaled = z / math.exp(log_t)
        top = scaled.max(axis=1)
        log_norm = top + np.log(np.exp(scaled - top[:, None]).sum(axis=1))
        return float(np.mean(log_norm - target / math.exp(log_t)))

    low, high = math.log(TEMPERATURE_BOUNDS[0]), math.log(TEMPERATURE_BOUNDS[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    while high - low > 1e-9:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return math.exp((low + high) / 2)


def confusion_matrix_png(evaluation: Evaluation, title: str) -> bytes:
    """Counts annotated, colour normalised per true class (so rare classes stay readable)."""
    counts = np.asarray(evaluation.confusion, dtype=np.float64)
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    k = len(evaluation.classes)
    side = max(4.0, 0.9 * k + 2.0)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    for row in range(k):
        for column in range(k):
            axes.text(
                column,
                row,
                str(int(counts[row, column])),
                ha="center",
                va="center",
                color="white" if share[row, column] > 0.5 else "black",
            )
    axes.set_xticks(range(k), evaluation.classes, rotation=45, ha="right")
    axes.set_yticks(range(k), evaluation.classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("truth")
    axes.set_title(f"{title}\nmacro-F1 {evaluation.macro_f1:.3f}, n = {evaluation.n}")
    return _png(figure)


def reliability_diagram_png(
    probabilities: ArrayLike, y_true: Sequence[int] | NDArray[np.integer], title: str
) -> bytes:
    """Accuracy against confidence per bin (Guo et al. 2017, fig. 1), with the bin counts."""
    probs, labels = _checked(probabilities, y_true)
    table = classification.reliability(probs.max(axis=1), probs.argmax(axis=1) == labels, ECE_BINS)
    count, confidence, accuracy = table.count, table.confidence, table.accuracy
    ece = _ece(probs, labels, ECE_BINS)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / ECE_BINS
    seen = count > 0

    figure = Figure(figsize=(5.0, 6.0), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres[seen], accuracy[seen], width=width, edgecolor="black", label="accuracy")
    top.bar(
        centres[seen],
        confidence[seen] - accuracy[seen],
        bottom=accuracy[seen],
        width=width,
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.set_title(f"{title}\nECE {ece:.3f} ({ECE_BINS} bins), n = {labels.shape[0]}")
    bottom.bar(centres, count, width=width, edgecolor="black", color="tab:grey")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("images")
    return _png(figure)


def _checked(
    probabilities: ArrayLike, y_true: Sequence[int] | NDArray[np.integer]
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    probs = classification.probability_rows(probabilities)
    labels = classification.class_indices(y_true, probs.shape[1], name="labels")
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {probs.shape[0]} probability rows")
    return probs, labels


def _ece(probs: NDArray[np.float64], labels: NDArray[np.int64], bins: int) -> float:
    correct = probs.argmax(axis=1) == labels
    return float(classification.expected_calibration_error(probs.max(axis=1), correct, bins))


def _png(figure: Figure) -> bytes:
    # Agg drawn onto explicitly, not through pyplot: no global figure registry, no GUI backend
    # chosen from the environment, safe in a worker thread.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # Without the "Software" chunk the bytes do not carry the matplotlib version.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
