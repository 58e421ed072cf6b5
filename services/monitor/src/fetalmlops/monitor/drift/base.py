"""What every drift test takes and gives: a `Reference`, a `Window` and an `Outcome`.

A study (one request) sends several frames of one fetus, often nearly the same picture, so rows
are not independent samples: every test here counts a study as one sample. Its frames share one
unit of weight (`block_weights`), and sample sizes are numbers of studies, never of frames. A
reference or window whose rows are all independent gives each row its own block and gets the
textbook test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

# The grey-level statistics of a prediction event (proto `ImageStatistics`). Its ``rows`` and
# ``columns`` describe the picture received, not its content, and take a handful of values that
# a continuous two-sample test cannot handle.
GREY_LEVEL_STATISTICS = ("mean", "std", "p05", "p95", "dark_fraction")

Floats = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Reference:
    """The held-out split a model version is compared with, one row per image."""

    classes: tuple[str, ...]
    class_prior: Floats  # (k,): share of each predicted class, in `classes` order
    probabilities: Floats  # (n, k)
    image_stats: Floats  # (n, f), columns named by `features`
    features: tuple[str, ...]
    embeddings: Floats  # (n, d), projected as `fetalmlops.imaging.statistics.projected` does
    blocks: NDArray[Any]  # (n,): the study (or patient) of each row
    # How many studies `class_prior` was counted on, when on more than these rows (the whole
    # held-out split beside a sample of it); None: on these rows.
    prior_studies: float | None = None

    def __post_init__(self) -> None:
        n, k = _rows(self.probabilities, "probabilities"), len(self.classes)
        if self.probabilities.shape[1] != k or self.class_prior.shape != (k,):
            raise ValueError(f"probabilities and class_prior must have {k} classes")
        if not np.isclose(self.class_prior.sum(), 1.0) or (self.class_prior < 0).any():
            raise ValueError("class_prior must be shares summing to 1")
        if self.image_stats.shape != (n, len(self.features)):
            raise ValueError(f"image_stats must be ({n}, {len(self.features)}) like features")
        _check_rows(n, embeddings=self.embeddings, blocks=self.blocks)


@dataclass(frozen=True, eq=False)
class Window:
    """m live predictions, arrays in the same column order as the reference's."""

    probabilities: Floats  # (m, k)
    image_stats: Floats  # (m, f)
    embeddings: Floats  # (m, d)
    predicted: NDArray[np.int64]  # (m,): class index
    blocks: NDArray[Any]  # (m,): request id, which groups the frames of one study

    def __post_init__(self) -> None:
        m = _rows(self.probabilities, "probabilities")
        _check_rows(
            m,
            image_stats=self.image_stats,
            embeddings=self.embeddings,
            predicted=self.predicted,
            blocks=self.blocks,
        )


@dataclass(frozen=True)
class Outcome:
    test: str
    statistic: float
    p_value: float
    threshold: float  # the test's alpha: drifted when p_value <= threshold
    drifted: bool
    detail: dict[str, Any] = field(default_factory=dict)


def decided(test: str, statistic: float, p_value: float, alpha: float, **detail: Any) -> Outcome:
    p = float(min(max(p_value, 0.0), 1.0))
    return Outcome(test, float(statistic), p, alpha, p <= alpha, detail)


def undecided(test: str, alpha: float, reason: str) -> Outcome:
    """Too few studies to test: reported, never counted as drift."""
    return Outcome(test, float("nan"), 1.0, alpha, False, {"undecided": reason})


def check(reference: Reference, window: Window) -> None:
    """A window measured like the reference: same classes, statistics and embedding width."""
    expected = (len(reference.classes), len(reference.features), reference.embeddings.shape[1])
    got = (window.probabilities.shape[1], window.image_stats.shape[1], window.embeddings.shape[1])
    if got != expected:
        raise ValueError(f"window has (classes, statistics, dim) {got}, reference {expected}")
    if ((window.predicted < 0) | (window.predicted >= expected[0])).any():
        raise ValueError("predicted class index out of range")


def confidence(probabilities: Floats) -> Floats:
    """The top-class probability of each row."""
    return np.asarray(probabilities.max(axis=1), dtype=np.float64)


def entropy(probabilities: Floats) -> Floats:
    """−Σ p log p of each row, in nats (0 log 0 = 0)."""
    p = np.clip(probabilities, 0.0, 1.0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return np.asarray(-(p * logs).sum(axis=1), dtype=np.float64)


def block_weights(blocks: NDArray[Any]) -> tuple[NDArray[np.intp], Floats]:
    """Each row's block index (0..g−1) and weight 1/(frames in its block): a study weighs 1."""
    _, codes, sizes = np.unique(blocks, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    return codes, 1.0 / sizes[codes]


def weighted_ks(
    x: Floats, x_blocks: NDArray[Any], y: Floats, y_blocks: NDArray[Any]
) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov on study-weighted ECDFs: (D, two-sided p-value).

    With one row per block this is `scipy.stats.ks_2samp(method="asymp")`. Otherwise each study
    counts once, in the ECDF and in the sample sizes, which is exact when a study's frames are
    identical and conservative when they differ.
    """
    _, wx = block_weights(x_blocks)
    _, wy = block_weights(y_blocks)
    gx, gy = wx.sum(), wy.sum()
    points = np.concatenate([x, y])
    d = float(np.abs(_ecdf(x, wx, points) / gx - _ecdf(y, wy, points) / gy).max())
    en = max(1.0, float(np.round(gx * gy / (gx + gy))))
    return d, float(stats.kstwo.sf(d, en))


def _ecdf(values: Floats, weights: Floats, points: Floats) -> Floats:
    order = np.argsort(values, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cumulative[np.searchsorted(values[order], points, side="right")]


def _rows(array: NDArray[Any], name: str) -> int:
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be (rows >= 1, columns), got {array.shape}")
    return int(array.shape[0])


def _check_rows(n: int, **arrays: NDArray[Any]) -> None:
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise ValueError(f"{name} has {array.shape[0]} rows, expected {n}")
