"""The registry's gate: floors, the margin over production, archiving, and the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from fetalmlops.common.db import (
    AuditEntry,
    ModelStage,
    ModelVersion,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.db.audit import entries, verify
from fetalmlops.trainer.registry import Gate, decide, next_version, promote_if_better, register
from fetalmlops.trainer.registry import recipe as registry_recipe
from fetalmlops.trainer.training import TrainConfig

GOOD_RECALL = {"fetal_brain": 0.9, "maternal_cervix": 0.8}


def metrics(f1: float, recall: dict[str, float] | None = None) -> dict[str, object]:
    return {"val_macro_f1": f1, "val_per_class_recall": recall or GOOD_RECALL}


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return create_engine_for(url)


def version(
    session: sa.orm.Session, f1: float, recall: dict[str, float] | None = None
) -> ModelVersion:
    return register(
        session,
        ModelVersion(
            model_name="planes",
            version=next_version(session, "planes"),
            metrics=metrics(f1, recall),
            storage_uri="s3://fetal-models/planes/v1/",
        ),
    )


def test_the_gate_decides_on_floors_and_on_production() -> None:
    gate = Gate(min_improvement=0.01, min_macro_f1=0.8, min_class_recall=0.5)
    assert decide(metrics(0.85), None, gate).promote
    assert not decide(metrics(0.75), None, gate).promote
    weak = decide(metrics(0.9, {"maternal_cervix": 0.2}), None, gate)
    assert not weak.promote and "maternal_cervix 0.200" in weak.summary()
    assert decide(metrics(0.92), metrics(0.90), gate).promote
    assert not decide(metrics(0.905), metrics(0.90), gate).promote  # within the margin: no
    assert decide(metrics(0.89), metrics(0.90), Gate(min_improvement=-0.02)).promote


def test_a_better_candidate_replaces_production_and_a_worse_one_does_not(
    engine: sa.Engine,
) -> None:
    with session_scope(engine) as session:
        first = version(session, 0.85)
        assert promote_if_better(session, first, Gate())[0].promote
    with session_scope(engine) as session:
        second = version(session, 0.90)
        decision, archived = promote_if_better(session, second, Gate())
        assert decision.promote and archived is not None and archived.version == 1
    with session_scope(engine) as session:
        worse = version(session, 0.88)
        decision, archived = promote_if_better(session, worse, Gate())
        assert not decision.promote and archived is None

    with session_scope(engine) as session:
        stages = dict(session.execute(sa.select(ModelVersion.version, ModelVersion.stage)).all())
        assert stages == {1: ModelStage.ARCHIVED, 2: ModelStage.PRODUCTION, 3: ModelStage.CANDIDATE}
        actions = session.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions == [
            "registered", "promoted", "registered", "archived", "promoted",
            "registered", "promotion refused",
        ]  # fmt: skip
        refusal = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "promotion refused")
        ).one()
        assert refusal.subject == "model:planes:v3" and "0.880" in refusal.details["reasons"][0]


def test_the_database_refuses_two_production_versions(engine: sa.Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        for _ in range(2):
            version(session, 0.9).stage = ModelStage.PRODUCTION
            session.flush()


def test_a_version_keeps_its_recipe_and_parent_and_the_trail_its_lineage(
    engine: sa.Engine,
) -> None:
    recipe = TrainConfig(backbone="resnet18", epochs=12, learning_rate=3e-4).to_dict()
    with session_scope(engine) as session:
        register(
            session,
            ModelVersion(
                model_name="planes",
                version=2,
                metrics=metrics(0.9),
                storage_uri="s3://fetal-models/planes/v2/",
                recipe=recipe,
                parent_version=1,
            ),
        )
    with session_scope(engine) as session:
        assert TrainConfig.from_dict(registry_recipe(session, "planes", 2) or {}) == TrainConfig(
            backbone="resnet18", epochs=12, learning_rate=3e-4
        )
        assert registry_recipe(session, "planes", 7) is None
        (registered,) = entries(session, "model:planes:v2")
        assert registered.details["parent_version"] == 1
        assert registered.details["recipe"]["backbone"] == "resnet18"
        assert verify(entries(session)) == []
