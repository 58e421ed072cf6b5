"""Prediction drift: the window's predicted-class distribution against the reference's.

Pearson's chi-square goodness of fit, counting each study once (its frames share its unit), on
classes whose expected count is at least 5: rarer ones are pooled, smallest first, since the
chi-square approximation fails below that (Cochran 1954). `class_prior` is itself estimated
from g_r studies (`Reference.prior_studies`, else the reference's own), which multiplies the
variance of the window's difference from it by 1 + g_w/g_r; the statistic is divided by that
factor, without which a large window against a small reference alarms far more often than
alpha. The Jensen–Shannon distance (base 2, in [0, 1]) is reported as the size of the change,
which the p-value is not.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial import distance

from fetalmlops.monitor.drift.base import (
    Floats,
    Outcome,
    Reference,
    Window,
    block_weights,
    check,
    decided,
)

ALPHA = 0.05
MIN_EXPECTED = 5.0


def chi_square(reference: Reference, window: Window, alpha: float = ALPHA) -> Outcome:
    check(reference, window)
    k = len(reference.classes)
    _, weights = block_weights(window.blocks)
    observed = np.bincount(window.predicted, weights=weights, minlength=k).astype(np.float64)
    studies = observed.sum()
    reference_studies = reference.prior_studies or block_weights(reference.blocks)[1].sum()
    expected = reference.class_prior * studies
    observed_pooled, expected_pooled = pooled(observed, expected)
    js = float(distance.jensenshannon(observed / studies, reference.class_prior, base=2))
    detail = {
        "jensen_shannon": js,
        "observed": dict(zip(reference.classes, observed.tolist(), strict=True)),
        "expected": dict(zip(reference.classes, expected.tolist(), strict=True)),
        "bins": len(expected_pooled),
    }
    if len(expected_pooled) < 2:
        return decided("prediction", 0.0, 1.0, alpha, **detail)
    pearson = float(((observed_pooled - expected_pooled) ** 2 / expected_pooled).sum())
    statistic = pearson / (1.0 + studies / reference_studies)
    p = float(stats.chi2.sf(statistic, len(expected_pooled) - 1))
    return decided("prediction", statistic, p, alpha, **detail)


def pooled(
    observed: Floats, expected: Floats, minimum: float = MIN_EXPECTED
) -> tuple[Floats, Floats]:
    """Classes expected fewer than `minimum` times merged into one bin, with the next smallest
    added until that bin reaches `minimum` too; one bin when even all of them do not."""
    small = int((expected < minimum).sum())
    if small == 0:
        return observed, expected
    order = np.argsort(expected, kind="stable")
    cumulative = np.cumsum(expected[order])
    merged = max(small, 2)
    while merged < len(order) and cumulative[merged - 1] < minimum:
        merged += 1
    rest = order[merged:]
    return (
        np.append(observed[rest], observed[order[:merged]].sum()),
        np.append(expected[rest], expected[order[:merged]].sum()),
    )
