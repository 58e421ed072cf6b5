"""`fetalmlops serve` refuses what it cannot serve before starting anything.

Serving itself runs as a real process in tests/integration/test_inference_server.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalmlops.inference.cli import app


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_one_source_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FETALMLOPS_INFERENCE_MODEL_URI", raising=False)
    code, output = invoke()
    assert code == 2 and "give --model-dir or --model-uri" in output
    code, output = invoke("--model-dir", ".", "--model-uri", "s3://fetal-models/m/v1/")
    assert code == 2 and "not both" in output
    code, output = invoke("--model-dir", "/no/such/version")
    assert code == 2 and "does not exist" in output


def test_a_folder_without_a_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "model-store").mkdir()
    code, output = invoke("--model-dir", str(tmp_path))
    assert code == 2
    assert "no .mar in" in output


def test_the_command_imports_kserve_and_torch_only_when_serving() -> None:
    # The `fetalmlops` CLI imports every command when it starts: seconds for each invocation,
    # and kserve parses sys.argv on import.
    probe = (
        "import sys, fetalmlops.inference.cli; "
        "print(sorted({'kserve', 'torch'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_corrupt_version_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "model-store" / "fetal-planes.mar"
    broken.parent.mkdir()
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    code, output = invoke("--model-dir", str(tmp_path))
    assert code == 2 and "not a readable .mar" in output
