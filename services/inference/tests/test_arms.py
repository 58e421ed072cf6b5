"""The arms of a rollout as a value: who answers a request, and the canary's choice."""

from __future__ import annotations

import hashlib
import math
import random
import uuid

import pytest

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.arms import Arm, Arms, Loaded, Mode, canary_draw
from fetalmlops.inference.predictor import PlanePredictor

from .conftest import VERSION


def request_ids(count: int, seed: int) -> list[str]:
    """Ids as the server makes them (uuid4 hex), drawn from a seeded generator."""
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(count)]


def test_the_canary_draw_is_the_ids_sha256_as_a_fraction() -> None:
    request_id = "4f1c0e6f0b5a4a54a1f1f3c2d5e6a7b8"
    digest = hashlib.sha256(request_id.encode()).digest()
    assert canary_draw(request_id) == int.from_bytes(digest[:8], "big") / 2**64
    assert all(0.0 <= canary_draw(i) < 1.0 for i in request_ids(1000, seed=1))


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 0.9])
def test_the_challengers_share_of_requests_is_the_fraction(fraction: float) -> None:
    count = 20_000
    chosen = sum(canary_draw(i) < fraction for i in request_ids(count, seed=7))
    # Binomial(count, fraction): within 4.5 standard deviations (a false alarm in ~150,000).
    tolerance = 4.5 * math.sqrt(count * fraction * (1 - fraction))
    assert abs(chosen - count * fraction) <= tolerance


@pytest.fixture(scope="module")
def versions(
    layout: ModelLayout, second: ModelLayout, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Loaded, Loaded]:
    predictor = PlanePredictor(open_version(layout.root, tmp_path_factory.mktemp("a")))
    champion = predictor.loaded_version(predictor.pending)
    challenger = predictor.loaded_version(open_version(second.root, tmp_path_factory.mktemp("b")))
    return champion, challenger


def test_who_answers_in_each_mode(versions: tuple[Loaded, Loaded]) -> None:
    champion, challenger = versions
    ids = request_ids(2000, seed=3)
    alone = Arms(champion)
    shadow = Arms(champion, challenger, Mode.SHADOW)
    canary = Arms(champion, challenger, Mode.CANARY, canary_fraction=0.25)

    assert {alone.answering(i) for i in ids} == {shadow.answering(i) for i in ids} == {Arm.CHAMPION}
    for request_id in ids:
        expected = Arm.CHALLENGER if canary_draw(request_id) < 0.25 else Arm.CHAMPION
        assert canary.answering(request_id) is expected
    assert (shadow.shadow, canary.shadow, alone.shadow) == (challenger, None, None)
    assert canary.loaded(Arm.CHALLENGER) is challenger and canary.loaded(Arm.CHAMPION) is champion
    # Whole fractions: nobody, or everybody.
    assert {Arms(champion, challenger, Mode.CANARY, 0.0).answering(i) for i in ids} == {
        Arm.CHAMPION
    }
    assert {Arms(champion, challenger, Mode.CANARY, 1.0).answering(i) for i in ids} == {
        Arm.CHALLENGER
    }


def test_arms_hold_versions_by_number_and_refuse_what_cannot_be_served(
    versions: tuple[Loaded, Loaded],
) -> None:
    champion, challenger = versions
    arms = Arms(champion, challenger, Mode.SHADOW)
    assert arms.holding(VERSION) is champion and arms.holding(5) is challenger
    assert arms.holding(6) is None
    assert champion.decoding == challenger.decoding  # the same recipe decodes alike
    with pytest.raises(ValueError, match="shadow needs a challenger"):
        Arms(champion, None, Mode.SHADOW)
    with pytest.raises(ValueError, match="canary fraction"):
        Arms(champion, challenger, Mode.CANARY, canary_fraction=1.5)
