"""The command line starts without importing the services: help comes from their source."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fetalmlops.cli.lazy import static_help
from fetalmlops.cli.main import COMMANDS

# What `fetalmlops stack --help` used to wait for: torch alone is seconds on a cold start.
HEAVY = ("torch", "torchvision", "kserve", "shap", "minio", "sqlalchemy", "pydicom", "kafka")


def modules_loaded_by(*args: str) -> tuple[str, list[str]]:
    """The output of ``fetalmlops ARGS`` run in a fresh interpreter, and the heavy modules
    that interpreter imported."""
    program = textwrap.dedent(f"""
        import json, sys
        from typer.testing import CliRunner
        from fetalmlops.cli.main import app
        result = CliRunner().invoke(app, {list(args)!r})
        loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
        print(json.dumps({{"output": result.output, "code": result.exit_code, "loaded": loaded}}))
    """)
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["code"] == 0, answer["output"]
    return answer["output"], answer["loaded"]


@pytest.mark.parametrize("args", [["--help"], ["stack", "--help"]])
def test_help_imports_no_service(args: list[str]) -> None:
    output, loaded = modules_loaded_by(*args)
    assert "Usage" in output
    assert loaded == []


def test_the_help_lists_every_command_with_its_own_help() -> None:
    output, _ = modules_loaded_by("--help")
    for name, reference in COMMANDS.items():
        assert name in output
        first_words = " ".join(static_help(reference).split()[:3])
        assert first_words and first_words in " ".join(output.split()), name


def test_a_command_is_loaded_when_it_runs() -> None:
    output, loaded = modules_loaded_by("phantom", "profiles")
    assert "portable" in output  # the phantom's own command ran
    assert "torch" not in loaded


def test_static_help_reads_apps_functions_and_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "somecommands.py").write_text(
        textwrap.dedent('''
            """The module's own docstring."""
            import typer
            app = typer.Typer(help="An app's help.")
            computed = typer.Typer(help=" ".join(["made", "at", "import"]))

            def command() -> None:
                """A function's docstring."""
        ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert static_help("somecommands:app") == "An app's help."
    assert static_help("somecommands:command") == "A function's docstring."
    assert static_help("somecommands:computed") == "The module's own docstring."
    assert static_help("somecommands:missing") == "The module's own docstring."
    assert static_help("no_such_module_here:app") == ""
    assert "somecommands" not in sys.modules
