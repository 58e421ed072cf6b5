"""Alembic environment for the kernel's schema; run it through ``fetalmlops.common.db.migrate``.

The database URL comes from ``config.attributes["url"]``, set by the caller, never from a
global or an ini file, so one process can migrate several databases (tests, tenants).
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from fetalmlops.common.db.columns import UtcDateTime
from fetalmlops.common.db.models import Base
from fetalmlops.common.db.session import create_engine_for


def render_type(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write drafted migrations with plain SQLAlchemy types, not this package's classes.

    A migration must not import the models it predates; UtcDateTime is a DateTime with UTC
    handling in Python only, and JSON columns are the JSON/JSONB pair in every revision.
    """
    if kind != "type":
        return False
    if isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, sa.JSON):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def run_offline() -> None:
    context.configure(
        url=context.config.attributes["url"],
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine_for(context.config.attributes["url"])
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        engine.dispose()


def _migrate(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copy, DROP and RENAME; with foreign keys on, dropping
        # a referenced table would cascade into or block its children. The pragma is a no-op
        # inside a transaction, so switch it off and end the implicit one before migrating.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table instead.
        render_as_batch=sqlite,
        compare_type=True,
        render_item=render_type,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
