"""The registry follows the rollout's states: the champion a state names becomes production,
a challenger it no longer serves is rejected, each audited; a promotion is announced, and a
replay changes no stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from fetalmlops.common.bus import EmbeddedBus, Record, Rejected, publish_event, read_event
from fetalmlops.common.db import ModelStage, ModelVersion, create_engine_for, session_scope, upgrade
from fetalmlops.common.db.audit import entries, verify
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.trainer.platform import Platform
from fetalmlops.trainer.stages import Changes, Registrar, changes
from fetalmlops.v1 import models_pb2

MODEL = "fetal-planes"


def state(
    champion: int, challenger: int = 0, sequence: int = 1, reason: str = ""
) -> models_pb2.RolloutChanged:
    return models_pb2.RolloutChanged(
        model_name=MODEL, champion_version=champion, challenger_version=challenger,
        sequence=sequence, reason=reason,
    )  # fmt: skip


def test_a_state_promotes_its_champion_and_rejects_the_challengers_it_dropped() -> None:
    assert changes(state(2), production=1, challengers=[2]) == Changes(2, ())
    assert changes(state(1), production=1, challengers=[2]).reject == (2,)
    shadow = changes(state(1, challenger=3), production=1, challengers=[2, 3])
    assert shadow.promote is None and shadow.reject == (2,)
    assert changes(state(0, challenger=1), production=None, challengers=[1]).promote is None


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        for number, stage in ((1, ModelStage.PRODUCTION), (2, ModelStage.CHALLENGER),
                              (3, ModelStage.CHALLENGER)):  # fmt: skip
            session.add(
                ModelVersion(
                    model_name=MODEL, version=number, stage=stage,
                    storage_uri=f"s3://fetal-models/{MODEL}/v{number}/",
                )
            )  # fmt: skip
    return Platform(settings, LocalStore(settings.store_dir), EmbeddedBus(partitions=1), engine)


def follow(
    platform: Platform, *states: models_pb2.RolloutChanged
) -> list[models_pb2.ModelPromoted]:
    bus = EmbeddedBus(partitions=1)
    for event in states:
        publish_event(bus, "fetal.models.rollout", MODEL, event, "monitor")
    subscription = bus.subscribe(["fetal.models.rollout"], "registry")
    records: list[Record] = []
    while batch := subscription.poll(0.05):
        records.extend(batch)
    registrar = Registrar(platform)
    for record in records:
        registrar.handle(record)
    announced = platform.bus.subscribe([platform.settings.topics.models_promoted], "check")
    found = []
    while batch := announced.poll(0.05):
        found.extend(read_event(record) for record in batch)
    announced.close()
    return found  # type: ignore[return-value]


def stages(platform: Platform) -> dict[int, ModelStage]:
    with session_scope(platform.engine) as session:
        return {v.version: v.stage for v in session.scalars(select(ModelVersion))}


def test_a_promotion_and_a_rollback_set_the_stages_and_announce_once(platform: Platform) -> None:
    canary = state(1, challenger=2, sequence=4)
    assert follow(platform, canary) == []
    assert stages(platform) == {1: ModelStage.PRODUCTION, 2: ModelStage.CHALLENGER,
                                3: ModelStage.REJECTED}  # fmt: skip
    promoted = state(2, sequence=5, reason="canary met its minimums")
    (announced,) = follow(platform, promoted)
    assert (announced.version, announced.previous_version) == (2, 1)
    assert announced.reason == "canary met its minimums"
    assert stages(platform) == {1: ModelStage.ARCHIVED, 2: ModelStage.PRODUCTION,
                                3: ModelStage.REJECTED}  # fmt: skip
    with session_scope(platform.engine) as session:
        trail = [(e.subject, e.action) for e in entries(session)]
        assert verify(entries(session)) == []
    assert trail == [(f"model:{MODEL}:v3", "rejected"), (f"model:{MODEL}:v1", "archived"),
                     (f"model:{MODEL}:v2", "promoted")]  # fmt: skip

    again = follow(platform, promoted)[-1]  # a replay: announced again, nothing else
    assert (again.version, again.previous_version) == (2, 1)
    with session_scope(platform.engine) as session:
        assert len(entries(session)) == len(trail)
    assert len(follow(platform, canary)) == 2  # an older state: nothing announced or changed
    assert stages(platform)[2] is ModelStage.PRODUCTION


def test_a_rolled_back_challenger_is_rejected(platform: Platform) -> None:
    assert follow(platform, state(1, sequence=7, reason="the arms disagree")) == []
    assert stages(platform) == {1: ModelStage.PRODUCTION, 2: ModelStage.REJECTED,
                                3: ModelStage.REJECTED}  # fmt: skip


def test_a_state_naming_an_unknown_version_is_rejected(platform: Platform) -> None:
    with pytest.raises(Rejected, match="v9"):
        follow(platform, state(9, sequence=2))


def test_the_cards_of_the_versions_a_state_changes_tell_their_history(platform: Platform) -> None:
    bucket = platform.settings.buckets.models
    platform.store.ensure_buckets([bucket])
    for number in (1, 2):
        platform.store.put(bucket, f"{MODEL}/v{number}/model-card.md", b"# Card\n\nBody.\n")
    follow(platform, state(2, sequence=5, reason="canary met its minimums"))
    promoted = platform.store.get(bucket, f"{MODEL}/v2/model-card.md").decode()
    archived = platform.store.get(bucket, f"{MODEL}/v1/model-card.md").decode()
    assert promoted.startswith("# Card\n\nBody.\n\n## Change history")
    assert "| trainer | promoted | canary met its minimums |" in promoted
    assert "| trainer | archived | canary met its minimums |" in archived
    with session_scope(platform.engine) as session:
        (entry,) = [e for e in entries(session) if e.action == "promoted"]
    assert f"`{entry.hash[:12]}`" in promoted
