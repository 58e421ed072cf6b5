"""Input drift: the grey-level statistics of the pictures, one KS test per statistic.

Five tests at alpha each would alarm on about 1 − 0.95⁵ ≈ 23 % of windows with nothing
changed. The p-values are therefore corrected as one family: Benjamini–Hochberg by default,
which under the global null (no statistic drifted) bounds the chance of any alarm by alpha
for these positively dependent tests (Benjamini & Yekutieli 2001), and is more powerful than
Bonferroni once several statistics move together, as gain and depth make them do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fetalmlops.monitor.drift.base import (
    GREY_LEVEL_STATISTICS,
    Floats,
    Outcome,
    Reference,
    Window,
    check,
    decided,
    weighted_ks,
)

ALPHA = 0.05
Correction = Literal["benjamini-hochberg", "bonferroni"]


def grey_level_ks(
    reference: Reference,
    window: Window,
    alpha: float = ALPHA,
    correction: Correction = "benjamini-hochberg",
    features: Sequence[str] = GREY_LEVEL_STATISTICS,
) -> Outcome:
    """Drifted when any statistic's corrected p-value is at most alpha; the outcome's p-value
    is the smallest corrected one and its statistic the largest KS distance."""
    check(reference, window)
    columns = [i for i, name in enumerate(reference.features) if name in features]
    if not columns:
        raise ValueError(f"the reference has none of the statistics {list(features)}")
    tested = [reference.features[i] for i in columns]
    distances, p_values = np.array(
        [
            weighted_ks(
                reference.image_stats[:, i],
                reference.blocks,
                window.image_stats[:, i],
                window.blocks,
            )
            for i in columns
        ]
    ).T
    adjusted = adjust(p_values, correction)
    return decided(
        "image",
        float(distances.max()),
        float(adjusted.min()),
        alpha,
        correction=correction,
        ks=dict(zip(tested, distances.tolist(), strict=True)),
        p_values=dict(zip(tested, p_values.tolist(), strict=True)),
        adjusted=dict(zip(tested, adjusted.tolist(), strict=True)),
        drifted_features=[name for name, q in zip(tested, adjusted, strict=True) if q <= alpha],
    )


def adjust(p_values: Floats, correction: Correction) -> Floats:
    """Adjusted p-values: a statistic is significant at alpha when its value is <= alpha."""
    m = len(p_values)
    if correction == "bonferroni":
        return np.minimum(p_values * m, 1.0)
    if correction != "benjamini-hochberg":
        raise ValueError(f"unknown correction {correction!r}")
    order = np.argsort(p_values)
    scaled = p_values[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    return adjusted
