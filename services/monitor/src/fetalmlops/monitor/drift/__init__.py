"""Drift tests, each a pure function ``(reference, window) -> Outcome`` named in `DETECTORS`.

One module per family, as Evidently keeps its ``stattests``: `prediction` (predicted classes),
`confidence` (top probability and entropy), `image` (grey-level statistics) and `embedding`
(MMD and a domain classifier). `alarm` turns one test's stream of outcomes into alarm episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fetalmlops.monitor.drift import confidence, embedding, image, prediction
from fetalmlops.monitor.drift.base import Outcome, Reference, Window


class Detector(Protocol):
    """A `Callable[[Reference, Window], Outcome]` whose alpha may be given."""

    def __call__(self, reference: Reference, window: Window, alpha: float = ...) -> Outcome: ...


DETECTORS: dict[str, Detector] = {
    "prediction": prediction.chi_square,
    "confidence": confidence.top_probability_ks,
    "entropy": confidence.entropy_ks,
    "image": image.grey_level_ks,
    "mmd": embedding.mmd,
    "classifier": embedding.classifier_auc,
}
# What each test uses when no alpha is given (each outcome carries its own as `threshold`).
DEFAULT_ALPHA: Mapping[str, float] = {
    "prediction": prediction.ALPHA,
    "confidence": confidence.ALPHA,
    "entropy": confidence.ALPHA,
    "image": image.ALPHA,
    "mmd": embedding.ALPHA,
    "classifier": embedding.ALPHA,
}


def run_all(reference: Reference, window: Window, alpha: float | None = None) -> dict[str, Outcome]:
    """Every registered test on one window, each at `alpha` or, when None, at its default."""
    return {
        name: detector(reference, window, DEFAULT_ALPHA[name] if alpha is None else alpha)
        for name, detector in DETECTORS.items()
    }


__all__ = ["DEFAULT_ALPHA", "DETECTORS", "Detector", "Outcome", "Reference", "Window", "run_all"]
