"""The acceptance gate: a challenger is judged against its champion on the same images."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from fetalmlops.changecontrol.acceptance import Scores, Verdict, judge, non_inferiority_bound
from fetalmlops.changecontrol.plan import load_plan
from fetalmlops.common.planes import Plane

CRITERIA = load_plan(
    Path(__file__).parents[3] / "deploy" / "change-control" / "plan.yaml"
).acceptance
N = 2000
SEGMENTS = ("samsung/hs70", "voluson/e10")
CERVIX, OTHER = list(Plane).index(Plane.MATERNAL_CERVIX), list(Plane).index(Plane.OTHER)
# The sequestered test set: planes and scanner segments drawn evenly.
TRUTH: NDArray[np.int64] = np.random.default_rng(0).integers(0, len(Plane), N)
SEGMENT: NDArray[np.str_] = np.array(SEGMENTS)[np.random.default_rng(1).integers(0, 2, N)]


def predictions(accuracy: float, seed: int) -> NDArray[np.int64]:
    """The truth with a share ``1 - accuracy`` replaced by another plane, at random."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(N) > accuracy
    other = (TRUTH + rng.integers(1, len(Plane), N)) % len(Plane)
    return np.where(wrong, other, TRUTH)


def scores(predicted: NDArray[np.int64], confidence: float = 0.95, latency: float = 80.0) -> Scores:
    """Scores that give ``predicted`` the probability ``confidence``, the rest spread evenly."""
    probabilities = np.full((predicted.shape[0], len(Plane)), (1 - confidence) / (len(Plane) - 1))
    probabilities[np.arange(predicted.shape[0]), predicted] = confidence
    return Scores(TRUTH, probabilities, SEGMENT, latency)


def failed(verdict: Verdict) -> list[str]:
    return [check.name for check in verdict.checks if not check.passed]


CHAMPION = scores(predictions(0.95, seed=1))


def test_an_identical_challenger_passes_every_check() -> None:
    verdict = judge(CRITERIA, CHAMPION, CHAMPION)

    assert verdict.passed, failed(verdict)
    assert verdict.checks[0].name == "macro_f1_non_inferiority"
    assert verdict.checks[0].value == 0.0 and verdict.checks[0].bound == -0.02
    assert [check.name for check in verdict.checks] == [
        "macro_f1_non_inferiority",
        *(f"recall[{plane.value}]" for plane in Plane),
        "segment_macro_f1[samsung/hs70]",
        "segment_macro_f1[voluson/e10]",
        "ece",
        "latency_p95_ms",
    ]


def test_a_challenger_as_good_with_other_errors_is_non_inferior() -> None:
    verdict = judge(CRITERIA, CHAMPION, scores(predictions(0.95, seed=2)))

    assert verdict.passed, failed(verdict)
    assert -0.02 < verdict.checks[0].value < 0.0


def test_a_clearly_worse_challenger_fails_non_inferiority() -> None:
    verdict = judge(CRITERIA, CHAMPION, scores(predictions(0.91, seed=2), confidence=0.91))

    assert not verdict.passed
    assert failed(verdict) == ["macro_f1_non_inferiority"]
    assert verdict.checks[0].value < -0.02


def test_a_low_recall_on_one_plane_fails_that_planes_floor() -> None:
    predicted = predictions(0.95, seed=1)
    cervix = TRUTH == CERVIX
    missed = cervix & (np.random.default_rng(3).random(N) < 0.3)
    predicted = np.where(missed, OTHER, predicted)

    verdict = judge(CRITERIA, CHAMPION, scores(predicted))

    assert "recall[maternal_cervix]" in failed(verdict)
    assert [name for name in failed(verdict) if name.startswith("recall")] == [
        "recall[maternal_cervix]"
    ]


def test_a_weak_scanner_segment_fails_its_floor() -> None:
    weak = np.where(SEGMENT == "samsung/hs70", predictions(0.7, seed=4), predictions(0.95, seed=1))

    verdict = judge(CRITERIA, CHAMPION, scores(weak))

    segment_failures = [name for name in failed(verdict) if name.startswith("segment")]
    assert segment_failures == ["segment_macro_f1[samsung/hs70]"]


def test_an_overconfident_challenger_fails_the_ece_ceiling() -> None:
    verdict = judge(CRITERIA, CHAMPION, scores(predictions(0.95, seed=1), confidence=0.5))

    assert failed(verdict) == ["ece"]
    assert verdict.checks[-2].value == pytest.approx(0.45, abs=0.02)


def test_a_slow_challenger_fails_the_latency_ceiling() -> None:
    verdict = judge(CRITERIA, CHAMPION, scores(predictions(0.95, seed=1), latency=250.0))

    assert failed(verdict) == ["latency_p95_ms"]
    assert verdict.checks[-1].value == 250.0 and verdict.checks[-1].bound == 200.0


def test_a_plane_the_test_set_lacks_fails_its_floor_and_is_none_in_json() -> None:
    keep = TRUTH != OTHER
    champion = replace(
        CHAMPION,
        truth=TRUTH[keep],
        probabilities=CHAMPION.probabilities[keep],
        segments=SEGMENT[keep],
    )

    verdict = judge(CRITERIA, champion, champion)
    as_json = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))

    assert failed(verdict) == ["recall[other]"]
    assert as_json["passed"] is False
    assert {"name": "recall[other]", "value": None, "bound": 0.8, "passed": False} in (
        as_json["checks"]
    )


def test_the_bootstrap_bound_is_deterministic_for_a_seed() -> None:
    challenger = scores(predictions(0.95, seed=2))

    first = judge(CRITERIA, CHAMPION, challenger, seed=7).checks[0].value
    assert judge(CRITERIA, CHAMPION, challenger, seed=7).checks[0].value == first
    assert judge(CRITERIA, CHAMPION, challenger, seed=8).checks[0].value != first


def test_scores_of_different_images_are_refused() -> None:
    shuffled = replace(CHAMPION, truth=np.roll(TRUTH, 1))
    with pytest.raises(ValueError, match="same truth"):
        judge(CRITERIA, CHAMPION, shuffled)

    moved = replace(CHAMPION, segments=np.roll(SEGMENT, 1))
    with pytest.raises(ValueError, match="same segments"):
        judge(CRITERIA, CHAMPION, moved)


def test_probabilities_without_a_column_per_plane_are_refused() -> None:
    five = replace(CHAMPION, probabilities=np.full((N, 5), 0.2))

    with pytest.raises(ValueError, match="a probability column per plane"):
        judge(CRITERIA, CHAMPION, five)


def test_resampling_in_chunks_gives_the_same_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    champion, challenger = predictions(0.95, seed=1), predictions(0.95, seed=2)
    whole = non_inferiority_bound(
        TRUTH, champion, challenger, confidence=0.95, resamples=300, seed=0
    )
    monkeypatch.setattr("fetalmlops.changecontrol.acceptance.RESAMPLE_CHUNK_ROWS", 7 * N)

    chunked = non_inferiority_bound(
        TRUTH, champion, challenger, confidence=0.95, resamples=300, seed=0
    )
    assert chunked == whole


def test_a_thousand_resamples_of_two_thousand_images_well_under_a_second() -> None:
    champion, challenger = predictions(0.95, seed=1), predictions(0.95, seed=2)
    non_inferiority_bound(TRUTH, champion, challenger, confidence=0.95, resamples=10, seed=0)

    started = time.perf_counter()
    non_inferiority_bound(TRUTH, champion, challenger, confidence=0.95, resamples=1000, seed=0)
    assert time.perf_counter() - started < 0.5


def test_a_first_version_has_no_champion_and_no_non_inferiority_check() -> None:
    challenger = scores(predictions(0.95, seed=2))

    alone = judge(CRITERIA, None, challenger)
    compared = judge(CRITERIA, CHAMPION, challenger)

    assert alone.passed, failed(alone)
    assert "macro_f1_non_inferiority" not in [check.name for check in alone.checks]
    assert alone.checks == compared.checks[1:]  # every other check, the same figures
    slow = judge(CRITERIA, None, replace(challenger, latency_p95_ms=250.0))
    assert failed(slow) == ["latency_p95_ms"]
    with pytest.raises(ValueError, match="a probability column per plane"):
        judge(CRITERIA, None, replace(challenger, probabilities=np.full((N, 5), 0.2)))
