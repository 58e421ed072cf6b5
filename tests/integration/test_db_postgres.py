"""The kernel's migrations and models on the stack's real PostgreSQL.

Each test works in a schema of its own, created by the owner role and dropped afterwards, so it
neither sees nor disturbs the tables the running services use in ``public``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, ProgrammingError

from fetalmlops.common import db
from fetalmlops.common.db import Base, ModelStage, ModelVersion, create_engine_for, session_scope
from fetalmlops.common.db.audit import append, entries, verify
from fetalmlops.common.settings import Settings

pytestmark = pytest.mark.stack

SERVICE = "ingest"


@dataclass(frozen=True)
class Schema:
    name: str
    owner_url: URL  # the role that owns the database and runs migrations
    service_url: URL  # a service's least-privilege role


def _in_schema(url: URL, schema: str) -> URL:
    # libpq `options` sets search_path for the session, so Alembic, the ORM and the inspector
    # all work in the test schema without any of them knowing it exists.
    return url.update_query_dict({"options": f"-csearch_path={schema}"})


@pytest.fixture
def schema(stack_settings: Callable[[str | None], Settings]) -> Iterator[Schema]:
    owner = sa.make_url(stack_settings(None).database_url)
    service = sa.make_url(stack_settings(SERVICE).database_url)
    assert owner.get_backend_name() == "postgresql"
    name = f"test_db_{uuid.uuid4().hex[:12]}"

    admin = create_engine_for(owner)
    quote = admin.dialect.identifier_preparer.quote
    role = quote(str(service.username))
    with admin.begin() as connection:
        connection.execute(sa.schema.CreateSchema(name))
        # Mirrors the stack's policy: services get DML on the owner's tables, never DDL.
        # Default privileges also cover tables a later upgrade creates again.
        connection.execute(sa.text(f"GRANT USAGE ON SCHEMA {quote(name)} TO {role}"))
        connection.execute(
            sa.text(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(name)}"
                f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
            )
        )
        connection.execute(
            sa.text(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {quote(name)}"
                f" GRANT USAGE ON SEQUENCES TO {role}"
            )
        )
    try:
        yield Schema(name, _in_schema(owner, name), _in_schema(service, name))
    finally:
        with admin.begin() as connection:
            connection.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


def _tables(url: URL) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_build_the_model_schema(schema: Schema) -> None:
    db.upgrade(schema.owner_url)

    assert db.current(schema.owner_url) == db.head()
    assert _tables(schema.owner_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert db.compare_to_models(schema.owner_url) == []
    engine = create_engine_for(schema.owner_url)
    metrics = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("model_versions")}
    engine.dispose()
    assert isinstance(metrics["metrics"], JSONB)


def test_service_role_writes_and_reads_but_cannot_change_the_schema(schema: Schema) -> None:
    db.upgrade(schema.owner_url)
    engine = create_engine_for(schema.service_url)
    try:
        with session_scope(engine) as session:
            session.add(
                ModelVersion(
                    model_name="planes",
                    version=1,
                    stage=ModelStage.PRODUCTION,
                    metrics={"macro_f1": 0.9, "per_class_recall": {"fetal_brain": 0.95}},
                    storage_uri="s3://fetal-models/planes/v1/",
                )
            )
        with session_scope(engine) as session:
            stored = session.scalars(sa.select(ModelVersion)).one()
            assert stored.stage is ModelStage.PRODUCTION
            assert stored.metrics["per_class_recall"] == {"fetal_brain": 0.95}

        bad_stage = sa.text(
            "INSERT INTO model_versions (model_name, version, stage, metrics, storage_uri)"
            " VALUES ('planes', 2, 'staging', '{}', 's3://fetal-models/planes/v2/')"
        )
        with (
            pytest.raises(IntegrityError, match="ck_model_versions_model_stage"),
            engine.begin() as connection,
        ):
            connection.execute(bad_stage)
        with (
            pytest.raises(ProgrammingError, match="must be owner"),
            engine.begin() as connection,
        ):
            connection.execute(sa.text("DROP TABLE audit_log"))
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(schema: Schema) -> None:
    db.upgrade(schema.owner_url)

    db.downgrade(schema.owner_url, "base")
    assert _tables(schema.owner_url) == {"alembic_version"}
    assert db.current(schema.owner_url) is None

    db.upgrade(schema.owner_url)
    assert db.current(schema.owner_url) == db.head()
    assert db.compare_to_models(schema.owner_url) == []


def test_the_audit_log_refuses_edits_and_a_row_changed_anyway_breaks_its_chain(
    schema: Schema,
) -> None:
    db.upgrade(schema.owner_url)
    engine, owner = create_engine_for(schema.service_url), create_engine_for(schema.owner_url)
    try:
        with session_scope(engine) as session:
            for version in (1, 2, 3):
                append(session, "trainer", "promoted", f"model:planes:v{version}", {"v": version})
        for statement in (
            "UPDATE audit_log SET actor = 'mallory' WHERE id = 2",
            "DELETE FROM audit_log WHERE id = 2",
        ):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as c:
                c.execute(sa.text(statement))
        with owner.begin() as connection:  # only the owner can lift the trigger
            connection.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            connection.execute(
                sa.text("""UPDATE audit_log SET details = '{"v": 20}' WHERE id = 2""")
            )
            connection.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        with session_scope(engine) as session:
            assert [b.entry_id for b in verify(entries(session))] == [2]
    finally:
        engine.dispose()
        owner.dispose()
