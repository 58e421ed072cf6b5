"""`fetalmlops audit show` and `verify` on a trail in SQLite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fetalmlops.changecontrol.cli import audit_app
from fetalmlops.common.db import AuditEntry, create_engine_for, session_scope, upgrade
from fetalmlops.common.db.audit import append


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/audit.db"
    upgrade(url)
    with session_scope(create_engine_for(url)) as session:
        append(session, "monitor", "drift alarm", "model:planes:v1", {"test": "image"})
        append(session, "trainer", "promoted", "model:planes:v2", {"macro_f1": 0.93})
        append(session, "trainer", "promoted", "model:other:v1", {})
    monkeypatch.setenv("FETALMLOPS_DATABASE_URL", url)
    return url


def test_show_lists_a_models_entries_in_order(database: str) -> None:
    shown = CliRunner().invoke(audit_app, ["show", "--model", "planes", "--json"])
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.output.splitlines()]
    assert [(e["actor"], e["action"], e["subject"]) for e in lines] == [
        ("monitor", "drift alarm", "model:planes:v1"),
        ("trainer", "promoted", "model:planes:v2"),
    ]


def test_verify_passes_then_names_the_entry_changed(database: str) -> None:
    runner = CliRunner()
    held = runner.invoke(audit_app, ["verify"])
    assert held.exit_code == 0 and "3 entries" in held.output
    with create_engine_for(database).begin() as connection:
        connection.execute(
            sa.update(AuditEntry).where(AuditEntry.id == 2).values(details={"macro_f1": 0.99})
        )
    broken = runner.invoke(audit_app, ["verify"])
    assert broken.exit_code == 1
    assert "entry 2: its content is not what was written" in broken.output


def test_a_database_never_migrated_gets_the_remedy_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FETALMLOPS_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    result = CliRunner().invoke(audit_app, ["verify"])
    assert result.exit_code == 2
    assert "fetalmlops db upgrade" in result.output and "Traceback" not in result.output
