"""Which rollout states a replica applies, what applying one does to the arms, and how
promotions and rollout states read in either order end on the latest decision."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.bus import Rejected
from fetalmlops.common.bus.base import Record
from fetalmlops.common.events import SCHEMA_HEADER, schema_name
from fetalmlops.inference.archive import Archive, ArchiveError, open_version
from fetalmlops.inference.arms import Mode
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.reload import Follower
from fetalmlops.inference.rollout import RolloutFollower, unservable
from fetalmlops.v1 import models_pb2, training_pb2

from .conftest import NAME, VERSION

SHADOW, CANARY = models_pb2.ROLLOUT_MODE_SHADOW, models_pb2.ROLLOUT_MODE_CANARY
ALONE = models_pb2.ROLLOUT_MODE_UNSPECIFIED


def uri(version: int) -> str:
    return f"s3://fetal-models/{NAME}/v{version}/"


def rollout(
    sequence: int,
    mode: int = SHADOW,
    challenger: int = 5,
    champion: int = VERSION,
    fraction: float = 0.0,
    at_s: int = 0,
    name: str = NAME,
) -> models_pb2.RolloutChanged:
    event = models_pb2.RolloutChanged(
        model_name=name,
        champion_version=champion,
        champion_storage_uri=uri(champion),
        challenger_version=challenger,
        challenger_storage_uri=uri(challenger) if challenger else "",
        mode=mode,  # type: ignore[arg-type]
        canary_fraction=fraction,
        sequence=sequence,
    )
    event.meta.occurred_at.FromSeconds(at_s)
    return event


def promotion(version: int, previous: int, at_s: int = 0) -> models_pb2.ModelPromoted:
    event = models_pb2.ModelPromoted(
        model_name=NAME, version=version, previous_version=previous, storage_uri=uri(version)
    )
    event.meta.occurred_at.FromSeconds(at_s)
    return event


def record(event: object, topic: str = "fetal.models.rollout") -> Record:
    value = event.SerializeToString()  # type: ignore[attr-defined]
    headers = ((SCHEMA_HEADER, schema_name(event).encode()),)  # type: ignore[arg-type]
    return Record(topic, 0, 0, NAME, value, headers)


class Store:
    """The versions a follower may open, by URI; v9 is promised but never uploaded."""

    def __init__(self, layouts: dict[int, ModelLayout], cache: Path) -> None:
        self.layouts, self.cache = layouts, cache
        self.opened: list[str] = []

    def open(self, storage_uri: str) -> Archive:
        self.opened.append(storage_uri)
        version = int(storage_uri.rstrip("/").rsplit("/v", 1)[1])
        if version not in self.layouts:
            raise ArchiveError(f"no model version at {storage_uri}: the prefix holds no object")
        return open_version(self.layouts[version].root, self.cache / str(len(self.opened)))


Replica = tuple[PlanePredictor, RolloutFollower, Follower, Store]


@pytest.fixture
def replica(
    layout: ModelLayout, second: ModelLayout, resized: ModelLayout, tmp_path: Path
) -> Replica:
    """A predictor serving version 4, and its two followers on one store."""
    store = Store({VERSION: layout, 5: second, 6: resized}, tmp_path)
    predictor = PlanePredictor(open_version(layout.root, tmp_path / "served"))
    predictor.load()
    return predictor, RolloutFollower(predictor, store.open), Follower(predictor, store.open), store


def versions(predictor: PlanePredictor) -> tuple[str, str | None, Mode, int]:
    arms = predictor.serving()
    challenger = None if arms.challenger is None else arms.challenger.version
    return arms.champion.version, challenger, arms.mode, arms.sequence


def test_a_shadow_state_loads_only_the_challenger(replica: Replica) -> None:
    predictor, rollouts, _, store = replica
    champion = predictor.serving().champion
    rollouts.handle(record(rollout(1, SHADOW, challenger=5)))

    assert versions(predictor) == (str(VERSION), "5", Mode.SHADOW, 1)
    assert predictor.serving().champion is champion  # held: not loaded again
    assert store.opened == [uri(5)]

    rollouts.handle(record(rollout(2, CANARY, challenger=5, fraction=0.2)))
    arms = predictor.serving()
    assert (arms.mode, arms.canary_fraction, arms.sequence) == (Mode.CANARY, 0.2, 2)
    assert store.opened == [uri(5)]  # both versions held


def test_stale_sequences_and_other_models_are_skipped(replica: Replica) -> None:
    predictor, rollouts, _, store = replica
    rollouts.handle(record(rollout(3, SHADOW)))
    applied = predictor.serving()
    for stale in (rollout(3, CANARY, fraction=1.0), rollout(2, ALONE, challenger=0)):
        rollouts.handle(record(stale))  # a replay from the topic's start, or a late duplicate
    rollouts.handle(record(rollout(9, CANARY, challenger=6, name="another-model")))
    # A model whose first version is on trial has no champion: nothing to serve instead.
    rollouts.handle(record(rollout(9, ALONE, champion=0, challenger=0)))
    assert predictor.serving() is applied
    assert store.opened == [uri(5)]


def test_a_rollback_serves_the_champion_alone(replica: Replica) -> None:
    predictor, rollouts, _, _ = replica
    champion = predictor.serving().champion
    rollouts.handle(record(rollout(1, CANARY, fraction=0.5)))
    rollouts.handle(record(rollout(2, ALONE, challenger=0)))
    assert versions(predictor) == (str(VERSION), None, Mode.CHAMPION_ALONE, 2)
    assert predictor.serving().champion is champion


def test_a_version_that_does_not_load_keeps_the_arms_served(replica: Replica) -> None:
    predictor, rollouts, _, store = replica
    rollouts.handle(record(rollout(1, SHADOW)))
    served = predictor.serving()
    with pytest.raises(ArchiveError, match="no model version"):  # retried, then dead-lettered
        rollouts.handle(record(rollout(2, CANARY, challenger=9, fraction=0.1)))
    assert predictor.serving() is served
    rollouts.handle(record(rollout(2, CANARY, challenger=6, fraction=0.1)))  # the next try
    assert versions(predictor) == (str(VERSION), "6", Mode.CANARY, 2)
    assert store.opened == [uri(5), uri(9), uri(6)]


def without_champion_uri() -> models_pb2.RolloutChanged:
    event = rollout(1, SHADOW)
    event.champion_storage_uri = ""
    return event


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (rollout(1, SHADOW, challenger=0), "shadow without a challenger"),
        (rollout(1, CANARY, challenger=0, fraction=0.1), "canary without a challenger"),
        (rollout(1, CANARY, fraction=1.5), "fraction 1.5 is not in [0, 1]"),
        (rollout(1, CANARY, fraction=float("nan")), "fraction nan is not in [0, 1]"),
        (rollout(1, SHADOW, champion=-1), "no champion version"),
        (without_champion_uri(), "no champion storage URI"),
        (rollout(1, 7), "unknown mode 7"),
    ],
)
def test_a_state_that_cannot_be_served_is_dead_lettered_at_once(
    replica: Replica, event: models_pb2.RolloutChanged, reason: str
) -> None:
    predictor, rollouts, _, store = replica
    served = predictor.serving()
    assert unservable(event) is not None
    with pytest.raises(Rejected, match=re.escape(reason)):
        rollouts.handle(record(event))
    assert predictor.serving() is served and store.opened == []
    assert unservable(rollout(1, ALONE, challenger=0)) is None
    with pytest.raises(Rejected, match="expected RolloutChanged"):
        rollouts.handle(record(training_pb2.TrainingRequested(model_name=NAME)))


def test_promoting_the_challenger_reuses_it_and_ends_the_rollout(replica: Replica) -> None:
    predictor, rollouts, promotions, store = replica
    rollouts.handle(record(rollout(4, SHADOW, at_s=10)))
    challenger = predictor.serving().challenger

    promotions.handle(record(promotion(5, VERSION, at_s=20), "fetal.models.promoted"))
    assert versions(predictor) == ("5", None, Mode.CHAMPION_ALONE, 4)
    assert predictor.serving().champion is challenger  # not loaded twice
    assert predictor.model_version == "5"
    # The rollout's sequence stays: its replay does not bring the old champion back ...
    rollouts.handle(record(rollout(4, SHADOW, at_s=10)))
    assert versions(predictor) == ("5", None, Mode.CHAMPION_ALONE, 4)
    # ... and a newer state, decided after the promotion, applies.
    rollouts.handle(record(rollout(5, CANARY, champion=5, challenger=6, fraction=0.1, at_s=30)))
    assert versions(predictor) == ("5", "6", Mode.CANARY, 5)
    assert store.opened == [uri(5), uri(6)]


Change = models_pb2.RolloutChanged | models_pb2.ModelPromoted
# History: a shadow of v5 beside v4 (t=10), the promotion of v5 (t=20), then a shadow of v6
# beside v5 (t=30). Each topic is read in order, the two by two threads in no order between
# them: every interleaving must end where the history ended.
SHADOW_OF_5 = rollout(1, SHADOW, challenger=5, at_s=10)
PROMOTION_OF_5 = promotion(5, VERSION, at_s=20)
SHADOW_OF_6 = rollout(2, SHADOW, champion=5, challenger=6, at_s=30)


def read(replica: Replica, change: Change) -> None:
    if isinstance(change, models_pb2.ModelPromoted):
        replica[2].handle(record(change, "fetal.models.promoted"))
    else:
        replica[1].handle(record(change))


@pytest.mark.parametrize(
    ("changes", "ending"),
    [
        ([SHADOW_OF_5, PROMOTION_OF_5], ("5", None, Mode.CHAMPION_ALONE)),
        ([PROMOTION_OF_5, SHADOW_OF_5], ("5", None, Mode.CHAMPION_ALONE)),
        ([SHADOW_OF_5, PROMOTION_OF_5, SHADOW_OF_6], ("5", "6", Mode.SHADOW)),
        ([PROMOTION_OF_5, SHADOW_OF_5, SHADOW_OF_6], ("5", "6", Mode.SHADOW)),
        ([SHADOW_OF_5, SHADOW_OF_6, PROMOTION_OF_5], ("5", "6", Mode.SHADOW)),
    ],
)
def test_catching_up_on_both_topics_ends_on_the_latest_decision(
    replica: Replica, changes: list[Change], ending: tuple[str, str | None, Mode]
) -> None:
    for change in changes:
        read(replica, change)
    assert versions(replica[0])[:3] == ending


def test_a_promotion_decided_before_the_rollout_served_is_skipped(replica: Replica) -> None:
    predictor, rollouts, promotions, _ = replica
    rollouts.handle(record(rollout(2, CANARY, champion=5, challenger=6, fraction=0.3, at_s=30)))
    promotions.handle(record(promotion(5, VERSION, at_s=20), "fetal.models.promoted"))
    assert versions(predictor) == ("5", "6", Mode.CANARY, 2)


@pytest.fixture
def awaiting(layout: ModelLayout, second: ModelLayout, tmp_path: Path) -> Replica:
    """A predictor started before its model had a version, and its two followers."""
    store = Store({VERSION: layout, 5: second}, tmp_path)
    predictor = PlanePredictor(None, NAME)
    return predictor, RolloutFollower(predictor, store.open), Follower(predictor, store.open), store


def test_a_replica_awaiting_its_first_version_skips_states_it_cannot_serve(
    awaiting: Replica,
) -> None:
    predictor, rollouts, _, store = awaiting
    rollouts.handle(record(rollout(1, SHADOW, name="another-model")))
    rollouts.handle(record(rollout(2, ALONE, champion=0, challenger=0)))  # a first version on trial
    assert predictor.awaiting_first_version and store.opened == []


# What a replica started before any version catches up on: v4 promoted (t=5), the shadow of v5
# beside it (t=10), v5 promoted (t=20). Either topic's first change gives it its first version.
PROMOTION_OF_4 = promotion(VERSION, 0, at_s=5)


@pytest.mark.parametrize(
    ("changes", "ending"),
    [
        ([PROMOTION_OF_4, SHADOW_OF_5], (str(VERSION), "5", Mode.SHADOW)),
        ([SHADOW_OF_5, PROMOTION_OF_4], (str(VERSION), "5", Mode.SHADOW)),
        ([SHADOW_OF_5, PROMOTION_OF_4, PROMOTION_OF_5], ("5", None, Mode.CHAMPION_ALONE)),
        ([PROMOTION_OF_4, SHADOW_OF_5, PROMOTION_OF_5], ("5", None, Mode.CHAMPION_ALONE)),
        ([PROMOTION_OF_4, PROMOTION_OF_5, SHADOW_OF_5], ("5", None, Mode.CHAMPION_ALONE)),
    ],
)
def test_a_replica_awaiting_its_first_version_ends_on_the_latest_decision(
    awaiting: Replica, changes: list[Change], ending: tuple[str, str | None, Mode]
) -> None:
    for change in changes:
        read(awaiting, change)
    assert awaiting[0].ready
    assert versions(awaiting[0])[:3] == ending
