"""Engines and sessions. Nothing here connects until a caller asks for an engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

_IN_MEMORY = {None, "", ":memory:"}


def create_engine_for(url: str | URL, **engine_kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings each backend needs to behave like the other."""
    url = sa.make_url(url)
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the kernel ships psycopg2.
        url = url.set(drivername="postgresql+psycopg2")
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, engine_kwargs)
    # Long-lived services outlive PostgreSQL restarts; test a pooled connection before use.
    engine_kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **engine_kwargs)


def _sqlite_engine(url: URL, engine_kwargs: dict[str, Any]) -> Engine:
    if url.database in _IN_MEMORY:
        # Each new connection to :memory: is a fresh, empty database; share one instead.
        engine_kwargs.setdefault("poolclass", StaticPool)
        engine_kwargs.setdefault("connect_args", {"check_same_thread": False})
    elif url.database and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **engine_kwargs)
    sa.event.listen(engine, "connect", _enable_foreign_keys)
    return engine


def _enable_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores REFERENCES unless asked per connection; PostgreSQL always enforces them.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back if it raises.

    Objects stay readable after the commit (``expire_on_commit=False``) so a handler can
    return what it wrote without a second round trip.
    """
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
