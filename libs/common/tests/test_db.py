"""The database layer on SQLite (the embedded default): migrations, models and constraints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError

from fetalmlops.common import db
from fetalmlops.common.db import (
    Base,
    DatasetSnapshot,
    Deployment,
    Image,
    ImageCopy,
    Label,
    ModelStage,
    ModelVersion,
    Plane,
    Report,
    ReportKind,
    create_engine_for,
    session_scope,
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    # A missing parent folder on purpose: the embedded default lives in a fresh data home.
    return f"sqlite:///{tmp_path / 'data' / 'fetalmlops.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    db.upgrade(url)
    engine = create_engine_for(url)
    yield engine
    engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _model_version(version: int = 1, stage: ModelStage = ModelStage.CANDIDATE) -> ModelVersion:
    return ModelVersion(
        model_name="planes",
        version=version,
        stage=stage,
        storage_uri=f"s3://fetal-models/planes/v{version}/",
    )


def test_upgrade_to_head_creates_every_table(url: str) -> None:
    assert db.current(url) is None

    db.upgrade(url)

    assert _tables(url) == set(Base.metadata.tables) | {"alembic_version"}
    assert db.current(url) == db.head() == "0011"


def test_migrations_match_the_models(url: str) -> None:
    db.upgrade(url)

    assert db.compare_to_models(url) == []


def test_comparison_sees_a_schema_the_migrations_did_not_build(url: str) -> None:
    db.upgrade(url)
    engine = create_engine_for(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_images_cohort"))
    engine.dispose()

    assert [diff[0] for diff in db.compare_to_models(url)] == ["add_index"]


def test_upgrade_at_head_is_a_no_op(url: str) -> None:
    db.upgrade(url)
    db.upgrade(url)

    assert db.current(url) == db.head()


def test_downgrade_to_base_removes_every_table(url: str) -> None:
    db.upgrade(url)

    db.downgrade(url, "base")

    assert _tables(url) == {"alembic_version"}
    assert db.current(url) is None


def test_model_version_round_trips_stage_json_and_aware_times(engine: sa.Engine) -> None:
    promoted = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as session:
        session.add(
            DatasetSnapshot(
                id="snap-1",
                name="fetal-planes",
                manifest_uri="s3://fetal-datasets/snap-1.json",
                content_sha256="a" * 64,
                split={"train": 0.8, "val": 0.1, "test": 0.1},
                split_seed=7,
                counts={"train": {"fetal_brain": 3}},
            )
        )
        version = _model_version(stage=ModelStage.PRODUCTION)
        version.metrics = {"macro_f1": 0.91, "per_class_recall": {"fetal_brain": 0.95}}
        version.snapshot_id = "snap-1"
        version.promoted_at = promoted
        session.add(version)

    with session_scope(engine) as session:
        stored = session.scalars(sa.select(ModelVersion)).one()
        assert stored.stage is ModelStage.PRODUCTION
        assert stored.metrics == {"macro_f1": 0.91, "per_class_recall": {"fetal_brain": 0.95}}
        assert stored.snapshot is not None and stored.snapshot.split_seed == 7
        assert stored.promoted_at == promoted
        assert stored.promoted_at is not None and stored.promoted_at.tzinfo is UTC
        assert stored.created_at.tzinfo is UTC


def test_model_name_and_version_are_unique(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        session.add(_model_version(1))

    with pytest.raises(IntegrityError, match="UNIQUE"), session_scope(engine) as session:
        session.add(_model_version(1))


def test_only_one_production_version_per_model(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        session.add(_model_version(1, ModelStage.PRODUCTION))
        session.add(_model_version(2, ModelStage.ARCHIVED))

    with pytest.raises(IntegrityError, match="UNIQUE"), session_scope(engine) as session:
        session.add(_model_version(3, ModelStage.PRODUCTION))


def test_database_rejects_an_unknown_stage(engine: sa.Engine) -> None:
    # Plain SQL, so the check constraint and not the ORM's enum validation is what refuses it.
    insert = sa.text(
        "INSERT INTO model_versions (model_name, version, stage, metrics, storage_uri)"
        " VALUES ('planes', 1, 'staging', '{}', 's3://fetal-models/planes/v1/')"
    )
    with (
        pytest.raises(IntegrityError, match="ck_model_versions_model_stage"),
        engine.begin() as connection,
    ):
        connection.execute(insert)


def test_orm_refuses_an_unknown_stage_before_the_database(engine: sa.Engine) -> None:
    version = _model_version()
    version.stage = "staging"  # type: ignore[assignment]
    with pytest.raises(StatementError, match="staging"), session_scope(engine) as session:
        session.add(version)


def test_sqlite_enforces_foreign_keys(engine: sa.Engine) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"), session_scope(engine) as session:
        session.add(Deployment(model_version_id=404, target="kserve/fetal/planes"))


def test_a_label_may_arrive_before_its_image_and_joins_it_later(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        session.add(Label(image_id="img-1", plane=Plane.FETAL_BRAIN, annotator="annotator-1"))
    with session_scope(engine) as session:
        session.add(Image(id="img-1", sha256="b" * 64, object_key="img-1.dcm", rows=2, columns=2))
        session.add(ImageCopy(copy_id="img-1", image_id="img-1"))
    with session_scope(engine) as session:
        image = session.get(Image, "img-1")
        assert image is not None
        assert [label.plane for label in image.labels] == [Plane.FETAL_BRAIN]


def test_a_label_naming_a_second_copy_joins_the_one_image(engine: sa.Engine) -> None:
    """The same instance sent twice is one image with two copies; a label may name either."""
    with session_scope(engine) as session:
        session.add(Label(image_id="img-second", plane=Plane.FETAL_FEMUR, annotator="a1"))
        session.add(Image(id="img-first", sha256="c" * 64, object_key="k", rows=2, columns=2))
        session.add_all(
            [
                ImageCopy(copy_id="img-first", image_id="img-first"),
                ImageCopy(copy_id="img-second", image_id="img-first"),
            ]
        )
    with session_scope(engine) as session:
        image = session.get(Image, "img-first")
        assert image is not None and [label.annotator for label in image.labels] == ["a1"]
        label = session.scalars(sa.select(Label)).one()
        assert label.image is not None and label.image.id == "img-first"


def test_one_image_per_source_instance(engine: sa.Engine) -> None:
    uid = "2.25.1234"
    with session_scope(engine) as session:
        session.add(Image(id="img-a", sha256="d" * 64, sop_instance_uid=uid, object_key="a",
                          rows=2, columns=2))  # fmt: skip
    with (
        pytest.raises(IntegrityError, match="sop_instance_uid"),
        session_scope(engine) as session,
    ):
        session.add(Image(id="img-b", sha256="e" * 64, sop_instance_uid=uid, object_key="b",
                          rows=2, columns=2))  # fmt: skip


def test_images_catalogued_before_copies_existed_are_their_own_published_copy(url: str) -> None:
    db.upgrade(url, "0004")
    engine = create_engine_for(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO images (id, sha256, object_key, rows, columns)"
                " VALUES ('img-old', :sha, 'images/img-old.dcm', 2, 2)"
            ),
            {"sha": "f" * 64},
        )
    db.upgrade(url)
    with session_scope(engine) as session:
        image = session.get(Image, "img-old")
        assert image is not None and image.published_at == image.created_at
        assert session.get(ImageCopy, "img-old") is not None
    engine.dispose()


def test_one_reading_per_annotator_and_image(engine: sa.Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Label(image_id="img-1", plane=Plane.FETAL_BRAIN, annotator="annotator-1"))
        session.add(Label(image_id="img-1", plane=Plane.OTHER, annotator="annotator-1"))


def test_report_window_must_not_end_before_it_starts(engine: sa.Engine) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    report = Report(kind=ReportKind.DRIFT, window_start=start, window_end=start - timedelta(1))
    with pytest.raises(IntegrityError, match="window_order"), session_scope(engine) as session:
        session.add(report)


def test_naive_datetimes_are_refused(engine: sa.Engine) -> None:
    report = Report(kind=ReportKind.CARBON, window_start=datetime(2026, 3, 2))
    with pytest.raises(StatementError, match="naive"), session_scope(engine) as session:
        session.add(report)


def test_session_scope_rolls_back_on_error(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(_model_version())
        session.flush()
        raise RuntimeError("handler failed")

    with session_scope(engine) as session:
        assert session.scalars(sa.select(ModelVersion)).all() == []


def test_no_column_is_named_for_phi() -> None:
    phi = re.compile(r"birth|dob|mrn|accession|address|phone|ssn|patient_(id|name)")
    columns = [f"{t.name}.{c.name}" for t in Base.metadata.tables.values() for c in t.columns]

    assert [c for c in columns if phi.search(c)] == []
    assert [c for c in columns if "patient" in c] == ["images.patient_pseudonym"]


def test_bare_postgresql_url_uses_psycopg2() -> None:
    engine = create_engine_for("postgresql://owner:secret@127.0.0.1:5432/fetalmlops")

    assert engine.dialect.driver == "psycopg2"


def test_in_memory_sqlite_keeps_one_database_across_connections() -> None:
    engine = create_engine_for("sqlite://")
    Base.metadata.create_all(engine)

    with session_scope(engine) as session:
        session.add(_model_version())
    with session_scope(engine) as session:
        assert session.scalars(sa.select(ModelVersion.version)).all() == [1]
