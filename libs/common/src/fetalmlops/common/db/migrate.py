"""Alembic migrations run from code: no alembic.ini, the URL is always an argument.

The scripts live in ``migrations/`` inside this package, so every service image that installs
the kernel can migrate its database (e.g. from an init container) with the same revisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from fetalmlops.common.db.models import Base
from fetalmlops.common.db.session import create_engine_for

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str | URL | None = None) -> Config:
    """An in-memory Alembic config; env.py reads the URL from ``attributes``.

    Passing the URL as an attribute, not a config option, keeps passwords with ``%`` intact
    (config options go through configparser interpolation) and out of any file.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Numbered, readable file names: versions/0002_add_something.py.
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str | URL) -> str | None:
    """The revision the database is at; None for an empty (never migrated) database."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision shipped in this package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def compare_to_models(url: str | URL) -> list[Any]:
    """Differences between the database schema and the models; empty when they agree."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def revision(url: str | URL, message: str, *, autogenerate: bool = True) -> Script | None:
    """Write the next numbered migration, drafted from the models against ``url``.

    A draft, not a finished migration: read it, name things, fix what autogenerate cannot
    see (renames, data moves, check constraints) before committing it.
    """
    config = alembic_config(url)
    number = len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1
    script = command.revision(
        config, message=message, autogenerate=autogenerate, rev_id=f"{number:04d}"
    )
    return script if isinstance(script, Script) else None
