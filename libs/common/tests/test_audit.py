"""The audit trail's chain on SQLite: every entry follows the one before it, and a changed,
inserted or deleted entry is found where the chain breaks."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from fetalmlops.common.db import AuditEntry, create_engine_for, session_scope, upgrade
from fetalmlops.common.db.audit import GENESIS, append, entries, verify


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    url = f"sqlite:///{tmp_path}/audit.db"
    upgrade(url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        for version in (1, 2, 3, 4):
            append(session, "trainer", "promoted", f"model:planes:v{version}", {"v": version})
        append(session, "monitor", "drift alarm", "model:other:v1", {"test": "image"})
    return engine


def trail(engine: sa.Engine, head: str | None = None) -> list[tuple[int, str]]:
    with session_scope(engine) as session:
        return [(b.entry_id, b.problem) for b in verify(entries(session), head)]


def test_each_entry_follows_the_one_before_it(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        written = entries(session)
        assert written[0].prev_hash == GENESIS
        assert [e.prev_hash for e in written[1:]] == [e.hash for e in written[:-1]]
        assert [e.subject for e in entries(session, "model:planes:")] == [
            f"model:planes:v{v}" for v in (1, 2, 3, 4)
        ]
        head = written[-1].hash
    assert trail(engine) == [] and trail(engine, head) == []


def test_a_changed_entry_is_found(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.update(AuditEntry).where(AuditEntry.id == 2).values(details={"v": 20})
        )
    assert trail(engine) == [(2, "its content is not what was written")]


def test_a_deleted_or_inserted_entry_breaks_the_link_after_it(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.delete(AuditEntry).where(AuditEntry.id == 3))
    assert [entry for entry, _ in trail(engine)] == [4]
    with session_scope(engine) as session:
        forged = append(session, "mallory", "promoted", "model:planes:v9", {})
        forged.prev_hash = GENESIS  # posing as the first entry, at the end of the chain
    problems = dict(trail(engine))
    assert set(problems) == {4, forged.id}


def test_a_rewritten_tail_is_found_against_the_head_kept_elsewhere(engine: sa.Engine) -> None:
    with session_scope(engine) as session:
        head = entries(session)[-1].hash
    with engine.begin() as connection:
        connection.execute(sa.delete(AuditEntry).where(AuditEntry.id == 5))
    assert trail(engine) == []  # the chain itself still holds
    assert [entry for entry, _ in trail(engine, head)] == [4]
