"""A seeded world of predictions to draw references and windows from, with or without a shift.

Six planes at FETAL_PLANES_DB's shares (the abdomen, 5.7 %, is rare enough to need pooling in
a small window), softmax outputs of a noisy one-hot logit, grey-level statistics from a
per-image brightness and contrast, and 64-dimensional embeddings around a centroid per plane.
A study of several frames repeats its image with a small jitter: near-identical frames, the
hardest case for tests that count frames as independent samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from fetalmlops.common.planes import Plane
from fetalmlops.monitor.drift.base import Outcome, Reference, Window

CLASSES = tuple(plane.value for plane in Plane)
PRIOR = np.array([711, 3092, 1040, 1718, 1626, 4213]) / 12400  # FETAL_PLANES_DB image counts
FEATURES = ("mean", "std", "p05", "p95", "dark_fraction", "rows", "columns")
DIM = 64
NARROW = 2  # the embedding width for tests that ignore embeddings
LOGIT_SCALE = 3.0
JITTER = 0.05  # frame-to-frame change within a study, in units of the between-study spread
CENTROIDS = np.random.default_rng(1234).normal(0.0, 1.0, (len(CLASSES), DIM))


@dataclass(frozen=True)
class Shift:
    prior: NDArray[np.float64] = field(default_factory=lambda: PRIOR)
    confidence: float = 1.0  # multiplies the logit scale: < 1 is a less certain model
    brightness: float = 0.0  # added to every grey level (full scale 1)
    contrast: float = 1.0  # multiplies the spread of grey levels
    embedding: float = 0.0  # added to the first `embedding_dims` dimensions (unit spread)
    embedding_dims: int = 16


NO_SHIFT = Shift()


def draw(
    rng: np.random.Generator,
    rows: int,
    frames: int = 1,
    shift: Shift = NO_SHIFT,
    dim: int = DIM,
) -> dict[str, NDArray[np.float64]]:
    studies = -(-rows // frames)
    study = np.repeat(np.arange(studies), frames)[:rows]
    planes = rng.choice(len(CLASSES), studies, p=shift.prior)

    def per_frame(values: NDArray[np.float64], spread: float) -> NDArray[np.float64]:
        return values[study] + rng.normal(0.0, JITTER * spread, (rows, *values.shape[1:]))

    scale = LOGIT_SCALE * shift.confidence
    logits = per_frame(
        scale * np.eye(len(CLASSES))[planes] + rng.normal(0, 1, (studies, len(CLASSES))), 1
    )
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    brightness = per_frame(rng.normal(0.22, 0.05, studies), 0.05) + shift.brightness
    spread = per_frame(rng.normal(0.18, 0.03, studies), 0.03) * shift.contrast
    size = rng.choice([480, 600, 768], studies)[study].astype(np.float64)
    image_stats = np.column_stack(
        [
            brightness,
            spread,
            np.clip(brightness - 1.4 * spread, 0, 1),
            np.clip(brightness + 1.9 * spread, 0, 1),
            stats.norm.cdf((0.05 - brightness) / spread),
            size,
            size * 4 / 3,
        ]
    )
    centres = CENTROIDS[planes, :dim] + rng.normal(0, 1, (studies, dim))
    embeddings = per_frame(centres, 1)
    embeddings[:, : shift.embedding_dims] += shift.embedding
    return {
        "probabilities": probabilities,
        "image_stats": image_stats,
        "embeddings": embeddings,
        "blocks": study.astype(np.float64),
    }


def reference(rng: np.random.Generator, rows: int, frames: int = 1, dim: int = DIM) -> Reference:
    drawn = draw(rng, rows, frames, dim=dim)
    predicted = drawn["probabilities"].argmax(axis=1)
    return Reference(
        classes=CLASSES,
        class_prior=np.bincount(predicted, minlength=len(CLASSES)) / rows,
        probabilities=drawn["probabilities"],
        image_stats=drawn["image_stats"],
        features=FEATURES,
        embeddings=drawn["embeddings"],
        blocks=drawn["blocks"],
    )


def window(
    rng: np.random.Generator,
    rows: int,
    frames: int = 1,
    shift: Shift = NO_SHIFT,
    dim: int = DIM,
) -> Window:
    drawn = draw(rng, rows, frames, shift, dim)
    return Window(
        probabilities=drawn["probabilities"],
        image_stats=drawn["image_stats"],
        embeddings=drawn["embeddings"],
        predicted=drawn["probabilities"].argmax(axis=1),
        blocks=drawn["blocks"],
    )


Sample = TypeVar("Sample", Reference, Window)


def unblocked(sample: Sample) -> Sample:
    """The same rows with every frame its own study: what a naive test assumes."""
    return replace(sample, blocks=np.arange(len(sample.blocks)))


def binomial_bound(alpha: float, trials: int) -> float:
    """alpha plus three binomial standard errors: a rate above it is not nominal."""
    return alpha + 3 * float(np.sqrt(alpha * (1 - alpha) / trials))


def drift_rates(
    detectors: Mapping[str, Callable[[Reference, Window], Outcome]],
    trials: int,
    reference_rows: int,
    window_rows: int,
    frames: int = 1,
    shift: Shift = NO_SHIFT,
    naive: bool = False,
    dim: int = DIM,
    seed: int = 0,
) -> dict[str, float]:
    """The share of `trials` windows each detector calls drifted, each window against a fresh
    reference (so a rate is the test's size or power, not one reference's luck), every detector
    on the same windows. `naive` hides the studies from the detectors: every frame its own
    block; `dim` narrows the embeddings for tests that ignore them (drawing 64 dimensions is
    most of the cost)."""
    rng = np.random.default_rng(seed)
    drifted = dict.fromkeys(detectors, 0)
    for _ in range(trials):
        before = reference(rng, reference_rows, frames, dim)
        after = window(rng, window_rows, frames, shift, dim)
        if naive:
            before, after = unblocked(before), unblocked(after)
        for name, detector in detectors.items():
            drifted[name] += detector(before, after).drifted
    return {name: count / trials for name, count in drifted.items()}
