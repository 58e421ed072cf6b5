"""Representation drift: the head's inputs, compared as whole vectors by two tests.

`mmd` is the kernel two-sample test of Gretton et al. (2012): the squared maximum mean
discrepancy (the biased, V-statistic estimate) between study-weighted samples under a Gaussian
kernel whose bandwidth is the median distance between reference rows, against a permutation
null. `classifier_auc` asks
whether a linear classifier tells reference studies from window studies better than chance,
by cross-validated AUC against a permutation null (Lopez-Paz & Oquab 2017).

Both permute studies, never frames: shuffling the near-identical frames of one study between
the two samples builds a null far narrower than the truth, and with 8 such frames a study
nearly every window alarms with nothing changed. A permutation p-value is
(1 + #{null >= observed}) / (1 + B) over B random permutations, which is never 0 and is valid
(with no shift, p <= alpha in at most a share alpha of windows). The observed value is compared
with the upper tail of the null, so identical samples (MMD² = 0) get p = 1, not an alarm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse, stats

from fetalmlops.monitor.drift.base import (
    Floats,
    Outcome,
    Reference,
    Window,
    block_weights,
    check,
    decided,
    undecided,
)

ALPHA = 0.05
PERMUTATIONS = 200
FOLDS = 5
BANDWIDTH_ROWS = 250  # rows of the reference the median heuristic looks at
MIN_STUDIES = 2


def mmd(
    reference: Reference,
    window: Window,
    alpha: float = ALPHA,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> Outcome:
    check(reference, window)
    side = _kernel_side(reference)
    win_codes, win_weights = block_weights(window.blocks)
    g_ref, g_win = side.studies, int(win_codes.max()) + 1
    if min(g_ref, g_win) < MIN_STUDIES:
        return undecided("mmd", alpha, f"needs {MIN_STUDIES} studies on each side")
    x, y = reference.embeddings, window.embeddings
    scale = 2.0 * side.bandwidth**2
    win_members = _members(win_codes, win_weights)
    across = side.members @ (win_members @ np.exp(-_squared_distances(y, x) / scale)).T
    among = _study_sums(np.exp(-_squared_distances(y, y) / scale), win_members)
    between = np.block([[side.sums, across], [across.T, among]])
    chosen = _window_studies(g_ref, g_win, permutations, np.random.default_rng(seed))
    within = between[chosen[:, :, None], chosen[:, None, :]].sum(axis=(1, 2))
    cross = between.sum(axis=1)[chosen].sum(axis=1)
    total = between.sum()
    # Each study weighs 1, so a sample's weight is its number of studies.
    mmd_squared = (
        within / g_win**2
        + (total - 2 * cross + within) / g_ref**2
        - 2 * (cross - within) / (g_ref * g_win)
    )
    return _permutation_outcome("mmd", mmd_squared, alpha, bandwidth=side.bandwidth)


def classifier_auc(
    reference: Reference,
    window: Window,
    alpha: float = ALPHA,
    permutations: int = PERMUTATIONS,
    folds: int = FOLDS,
    seed: int = 0,
) -> Outcome:
    """Diagonal linear discriminant on per-study mean embeddings, scored out of fold."""
    check(reference, window)
    x = _reference_study_means(reference)
    y = _study_means(window.embeddings, window.blocks)
    folds = min(folds, len(x), len(y))
    if folds < MIN_STUDIES:
        return undecided("classifier", alpha, f"needs {MIN_STUDIES} studies on each side")
    rows = np.concatenate([x, y])
    rng = np.random.default_rng(seed)
    chosen = _window_studies(len(x), len(y), permutations, rng)
    fold = rng.permutation(len(rows)) % folds
    labels = np.zeros((len(chosen), len(rows)))
    np.put_along_axis(labels, chosen, 1.0, axis=1)
    auc = _auc(_out_of_fold_scores(rows, chosen, fold, folds), labels)
    return _permutation_outcome("classifier", auc, alpha, folds=folds)


def _auc(scores: Floats, labels: Floats) -> Floats:
    """Mann–Whitney AUC of each row of scores for its row of 0/1 labels, ties counted half."""
    order = np.argsort(scores, axis=1)
    ordered = np.take_along_axis(scores, order, axis=1)
    if (np.diff(ordered, axis=1) == 0).any():  # only degenerate samples tie: rank them slowly
        rank_sums = (stats.rankdata(scores, axis=1) * labels).sum(axis=1)
    else:
        positions = np.arange(1, scores.shape[1] + 1)
        rank_sums = np.take_along_axis(labels, order, axis=1) @ positions
    positives = labels.sum(axis=1)
    negatives = scores.shape[1] - positives
    return np.asarray((rank_sums - positives * (positives + 1) / 2) / (positives * negatives))


def _out_of_fold_scores(
    rows: Floats, chosen: NDArray[np.intp], fold: NDArray[np.intp], folds: int
) -> Floats:
    """(p, n) scores of every row by the discriminant fitted without its fold, for each of
    the p labellings (``chosen``: the rows labelled 1 in each). All folds at once: a fold's
    training sums are the totals less its own, so each labelling costs a sum over its chosen
    rows and one matrix product."""
    n, dim = rows.shape
    member = np.eye(folds)[fold]  # (n, folds)
    spread = (member[:, :, None] * rows[:, None, :]).reshape(n, folds * dim)
    in_fold = spread[chosen].sum(axis=1).reshape(-1, folds, dim)  # each fold's sums over label 1
    sum1 = in_fold.sum(axis=1, keepdims=True) - in_fold
    n1 = chosen.shape[1] - member[chosen].sum(axis=1)  # (p, folds)
    count = n - member.sum(axis=0)  # training rows per fold
    total = rows.sum(axis=0) - member.T @ rows  # (folds, dim), the same for every p
    squares = (rows**2).sum(axis=0) - member.T @ rows**2
    n1 = np.maximum(n1, 1.0)[..., None]
    n0 = np.maximum(count[:, None] - n1, 1.0)
    mean1, mean0 = sum1 / n1, (total - sum1) / n0
    within = (squares - n1 * mean1**2 - n0 * mean0**2) / np.maximum(count - 2, 1)[:, None]
    variance = np.maximum(within, 1e-12) + 1e-6 * within.mean(axis=-1, keepdims=True)
    direction = (mean1 - mean0) / variance  # (p, folds, dim)
    offset = (direction * (mean1 + mean0) / 2).sum(axis=-1)  # (p, folds)
    every = (direction.reshape(-1, dim) @ rows.T).reshape(-1, folds, n)
    own = np.arange(n)
    return np.asarray(every[:, fold, own] - offset[:, fold], dtype=np.float64)


def _permutation_outcome(test: str, values: Floats, alpha: float, **detail: Any) -> Outcome:
    """`values[0]` observed, the rest its permutation null."""
    observed, null = values[0], values[1:]
    tolerance = 1e-9 * max(abs(float(observed)), 1e-12)  # rounding must not split a tie
    p = (1 + int((null >= observed - tolerance).sum())) / (1 + len(null))
    return decided(test, float(observed), p, alpha, permutations=len(null), **detail)


def _window_studies(
    g_ref: int, g_win: int, permutations: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """(1 + permutations, g_win) indices of the studies on the window's side among the pooled
    g_ref + g_win (the reference's first): the observed split, then random ones."""
    keys = rng.random((permutations, g_ref + g_win))
    shuffled = np.argpartition(keys, g_win - 1, axis=1)[:, :g_win]
    return np.vstack([np.arange(g_ref, g_ref + g_win), shuffled])


@dataclass(frozen=True)
class _KernelSide:
    """What a reference brings to every window's MMD, computed once per reference."""

    bandwidth: float
    members: sparse.csr_array  # (studies, rows): each row's weight in its study
    sums: Floats  # (studies, studies): the study sums of the reference's own kernel

    @property
    def studies(self) -> int:
        return int(self.members.shape[0])


@lru_cache(maxsize=32)
def _kernel_side(reference: Reference) -> _KernelSide:
    x = reference.embeddings
    squared = _squared_distances(x, x)
    bandwidth = _median_distance(squared, len(x))
    members = _members(*block_weights(reference.blocks))
    return _KernelSide(
        bandwidth, members, _study_sums(np.exp(-squared / (2.0 * bandwidth**2)), members)
    )


@lru_cache(maxsize=32)
def _reference_study_means(reference: Reference) -> Floats:
    return _study_means(reference.embeddings, reference.blocks)


def _members(codes: NDArray[np.intp], weights: Floats) -> sparse.csr_array:
    """(studies, rows): M[a, i] = w_i when row i belongs to study a."""
    return sparse.csr_array((weights, (codes, np.arange(len(codes)))))


def _study_sums(kernel: Floats, members: sparse.csr_array) -> Floats:
    """S[a, b] = Σ w_i w_j k(x_i, x_j) over the rows i of study a and j of study b."""
    return np.asarray(members @ (members @ kernel).T, dtype=np.float64)


def _study_means(rows: Floats, blocks: NDArray[Any]) -> Floats:
    codes, weights = block_weights(blocks)
    means = np.zeros((int(codes.max()) + 1, rows.shape[1]))
    np.add.at(means, codes, rows * weights[:, None])
    return means


def _squared_distances(a: Floats, b: Floats) -> Floats:
    squared = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.asarray(np.maximum(squared, 0.0), dtype=np.float64)


def _median_distance(squared: Floats, n_ref: int) -> float:
    """The median distance between reference rows (at most `BANDWIDTH_ROWS` of them, evenly
    spaced), or 1 when they all coincide."""
    rows = np.arange(0, n_ref, max(1, n_ref // BANDWIDTH_ROWS))
    pairs = squared[np.ix_(rows, rows)][np.triu_indices(len(rows), k=1)]
    median = float(np.sqrt(np.median(pairs))) if len(pairs) else 0.0
    return median if median > 0 else 1.0
