"""The `stack` commands: exit codes and error messages a developer sees (no servers needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalmlops.stack.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FETALMLOPS_STACK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_status_lists_each_log_file_and_fails_when_stopped(fresh_home: Path) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    for name in ("kafka", "minio", "postgres"):
        assert str(fresh_home / "logs" / f"{name}.log") in result.output


def test_env_prints_exports_for_a_service() -> None:
    result = runner.invoke(app, ["env", "--service", "monitor"])
    assert result.exit_code == 0
    assert "export FETALMLOPS_MINIO_ACCESS_KEY=monitor\n" in result.output


def test_a_stack_error_is_a_message_not_a_traceback() -> None:
    result = runner.invoke(app, ["env", "--service", "pacs"])
    assert result.exit_code == 1
    assert "unknown service 'pacs'" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
