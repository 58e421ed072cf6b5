"""The acceptance gate: does a challenger clear the plan's bar against its champion?

Both models are scored on the same images of the sequestered test set; `judge` compares them
by the plan's `Acceptance` criteria and gives a `Verdict` of named checks, every one of which
must pass:

* ``macro_f1_non_inferiority``: the lower one-sided ``confidence`` bound of challenger −
  champion macro-F1, from a paired percentile bootstrap (Efron & Tibshirani 1993, ch. 13):
  each resample draws image indices with replacement and scores *both* models on the same
  draw, so the spread is that of the difference, not of two independent figures. It must be at
  least −margin: a challenger may be no worse than the champion by more than the margin, with
  that confidence.
* ``recall[<plane>]``: the challenger's recall of each plane against its floor.
* ``segment_macro_f1[<segment>]``: the challenger's macro-F1 within each scanner segment
  against the segment floor.
* ``ece``: the challenger's expected calibration error (15 bins of the top probability, the
  trainer's and the monitor's binning) against its ceiling.
* ``latency_p95_ms``: the challenger's 95th-percentile latency against its ceiling.

A model's first version has no champion: it is judged by the plan's absolute bars alone, and
its verdict has no non-inferiority check (there is nothing to be inferior to).

A figure the test set cannot give (the recall of a plane it holds no image of) is NaN, and a
NaN meets no floor and no ceiling: what was not measured was not shown.

Macro-F1 averages over the planes present in the truth (``over="truth"`` in
`fetalmlops.metrics.classification`): the two models share the truth, so in every resample
both are averaged over the same planes and their difference is a difference of the models
alone. Within a scanner segment, which may lack a rare plane, it keeps a plane the segment
never shows from counting as an F1 of 0. (On a test set that holds every plane this is
scikit-learn's ``f1_score(average="macro")``, the trainer's model-card figure.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalmlops.changecontrol.plan import Acceptance
from fetalmlops.common.planes import Plane
from fetalmlops.metrics import classification

PLANES = tuple(Plane)  # the class-index order of every model's probability columns
# Index sets drawn at once are (resamples, images) int64: bound them to ~16 MB each, so that a
# large test set does not ask for gigabytes; the draws, and so the bound, are the same.
RESAMPLE_CHUNK_ROWS = 2_000_000


@dataclass(frozen=True, eq=False)  # arrays compare elementwise, not to one bool
class Scores:
    """One model's scoring of the sequestered test set."""

    truth: NDArray[np.integer[Any]]  # (n,) true class index per image, in `Plane` order
    probabilities: NDArray[np.floating[Any]]  # (n, 6) the model's softmax per image
    segments: NDArray[np.str_]  # (n,) the scanner segment of each image
    latency_p95_ms: float  # the model's 95th-percentile inference latency


@dataclass(frozen=True)
class Check:
    """One criterion: the figure measured, the bound it is held to, and whether it holds."""

    name: str
    value: float
    bound: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; a figure that could not be measured (NaN) is None."""
        return {
            "name": self.name,
            "value": None if math.isnan(self.value) else self.value,
            "bound": self.bound,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger is accepted: every check passed."""

    passed: bool
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for the `fetal.models.trained` event and the audit trail."""
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks]}


def judge(
    criteria: Acceptance, champion: Scores | None, challenger: Scores, seed: int = 0
) -> Verdict:
    """The verdict on ``challenger`` against ``champion`` by ``criteria``; with no champion
    (the model's first version), every check but non-inferiority.

    Raises ValueError unless both scored the same images (the same truth and segments, in the
    same order) with (n, 6) probability rows. ``seed`` fixes the bootstrap's draws.
    """
    truth, segments, challenger_probs = _checked(challenger)
    predicted = challenger_probs.argmax(axis=1)
    checks = []
    if champion is not None:
        champion_truth, champion_segments, champion_probs = _checked(champion)
        if not np.array_equal(champion_truth, truth):
            raise ValueError("champion and challenger were not scored on the same truth")
        if not np.array_equal(champion_segments, segments):
            raise ValueError("champion and challenger were not scored on the same segments")
        bound = non_inferiority_bound(
            truth,
            champion_probs.argmax(axis=1),
            predicted,
            confidence=criteria.confidence,
            resamples=criteria.bootstrap_resamples,
            seed=seed,
        )
        checks.append(
            _floor("macro_f1_non_inferiority", bound, -criteria.macro_f1_non_inferiority_margin)
        )
    checks += [
        *recall_checks(truth, predicted, criteria.recall_floors),
        *segment_checks(truth, predicted, segments, criteria.segment_macro_f1_floor),
        _ceiling("ece", calibration_error(truth, challenger_probs), criteria.ece_ceiling),
        _ceiling(
            "latency_p95_ms", float(challenger.latency_p95_ms), criteria.latency_p95_ms_ceiling
        ),
    ]
    return Verdict(all(check.passed for check in checks), tuple(checks))


def non_inferiority_bound(
    truth: NDArray[np.int64],
    champion_predicted: NDArray[np.int64],
    challenger_predicted: NDArray[np.int64],
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> float:
    """The lower one-sided ``confidence`` bound of challenger − champion macro-F1, from
    ``resamples`` paired bootstrap draws of the images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = truth.shape[0]
    differences = []
    per_chunk = max(1, RESAMPLE_CHUNK_ROWS // n)
    for start in range(0, resamples, per_chunk):
        rows = rng.integers(0, n, size=(min(per_chunk, resamples - start), n))
        true = truth[rows]
        challenger = classification.confusion_matrix(true, challenger_predicted[rows], len(PLANES))
        champion = classification.confusion_matrix(true, champion_predicted[rows], len(PLANES))
        differences.append(
            classification.macro_f1(challenger, over="truth")
            - classification.macro_f1(champion, over="truth")
        )
    return float(np.quantile(np.concatenate(differences), 1.0 - confidence))


def recall_checks(
    truth: NDArray[np.int64], predicted: NDArray[np.int64], floors: dict[Plane, float]
) -> list[Check]:
    """``recall[<plane>]`` for each plane, in `Plane` order."""
    recall = classification.per_class_recall(
        classification.confusion_matrix(truth, predicted, len(PLANES))
    )
    return [
        _floor(f"recall[{plane.value}]", float(recall[index]), floors[plane])
        for index, plane in enumerate(PLANES)
    ]


def segment_checks(
    truth: NDArray[np.int64],
    predicted: NDArray[np.int64],
    segments: NDArray[np.str_],
    floor: float,
) -> list[Check]:
    """``segment_macro_f1[<segment>]`` for each scanner segment, in name order."""
    checks = []
    for segment in sorted(set(segments.tolist())):
        inside = segments == segment
        confusion = classification.confusion_matrix(truth[inside], predicted[inside], len(PLANES))
        figure = float(classification.macro_f1(confusion, over="truth"))
        checks.append(_floor(f"segment_macro_f1[{segment}]", figure, floor))
    return checks


def calibration_error(truth: NDArray[np.int64], probabilities: NDArray[np.float64]) -> float:
    """ECE of the top probability, in `classification.ECE_BINS` equal-width bins."""
    predicted = probabilities.argmax(axis=1)
    return float(
        classification.expected_calibration_error(probabilities.max(axis=1), predicted == truth)
    )


def _checked(
    scores: Scores,
) -> tuple[NDArray[np.int64], NDArray[np.str_], NDArray[np.float64]]:
    """Truth, segments and probabilities of ``scores`` as checked arrays; ValueError if not."""
    probs = classification.probability_rows(scores.probabilities)
    if probs.shape[1] != len(PLANES):
        raise ValueError(f"need a probability column per plane ({len(PLANES)}), got {probs.shape}")
    truth = classification.class_indices(scores.truth, len(PLANES), name="true classes")
    segments = np.asarray(scores.segments).astype(np.str_)
    if not truth.shape[0] == segments.shape[0] == probs.shape[0] or segments.ndim != 1:
        raise ValueError(
            f"{truth.shape[0]} true classes, segments of shape {segments.shape} "
            f"and {probs.shape[0]} probability rows"
        )
    if math.isnan(scores.latency_p95_ms) or scores.latency_p95_ms < 0:
        raise ValueError(
            f"latency_p95_ms must be a non-negative number, got {scores.latency_p95_ms}"
        )
    return truth, segments, probs


def _floor(name: str, value: float, bound: float) -> Check:
    return Check(name, value, bound, passed=value >= bound)  # False for NaN


def _ceiling(name: str, value: float, bound: float) -> Check:
    return Check(name, value, bound, passed=value <= bound)  # False for NaN
