"""Confidence drift: how sure the model is, against how sure it was on the held-out split.

A model meeting pictures unlike its training set usually grows less certain before anything
else is visible, and more certain when a preset saturates the picture. Two tests, registered
separately because they answer differently: the top-class probability sees a loss of
certainty in the winner, the entropy also sees the rest of the vector spread out (two close
runners-up). Both are two-sample Kolmogorov–Smirnov tests counting each study once.
"""

from __future__ import annotations

from fetalmlops.monitor.drift.base import (
    Outcome,
    Reference,
    Window,
    check,
    confidence,
    decided,
    entropy,
    weighted_ks,
)

ALPHA = 0.05


def top_probability_ks(reference: Reference, window: Window, alpha: float = ALPHA) -> Outcome:
    check(reference, window)
    now, then = confidence(window.probabilities), confidence(reference.probabilities)
    d, p = weighted_ks(then, reference.blocks, now, window.blocks)
    return decided(
        "confidence", d, p, alpha, window_mean=float(now.mean()), reference_mean=float(then.mean())
    )


def entropy_ks(reference: Reference, window: Window, alpha: float = ALPHA) -> Outcome:
    check(reference, window)
    now, then = entropy(window.probabilities), entropy(reference.probabilities)
    d, p = weighted_ks(then, reference.blocks, now, window.blocks)
    return decided(
        "entropy", d, p, alpha, window_mean=float(now.mean()), reference_mean=float(then.mean())
    )
