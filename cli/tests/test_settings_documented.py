from pathlib import Path

from typer.testing import CliRunner

from fetalmlops.cli.main import app
from fetalmlops.cli.settings_doc import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting_with_its_default() -> None:
    # The README's tables are the command's output verbatim: a new or changed setting fails here
    # until `fetalmlops settings` is pasted into the README again.
    assert settings_markdown() in README.read_text()
    assert "`FETALMLOPS_BUS_MAX_ATTEMPTS` | `3`" in settings_markdown()


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for args in (
        [],
        ["run"],
        ["stack"],
        ["stack", "up"],
        ["stack", "down"],
        ["stack", "status"],
        ["stack", "env"],
        ["db"],
        ["db", "upgrade"],
        ["settings"],
        ["phantom", "generate"],
        ["phantom", "profiles"],
        ["anonymize"],
        ["dataset", "import"],
        ["train"],
        ["snapshot", "create"],
        ["serve"],
        ["monitor", "report"],
        ["plan", "validate"],
        ["audit", "show"],
        ["audit", "verify"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage" in result.output


def test_unknown_service_is_refused_with_the_installed_ones() -> None:
    result = CliRunner().invoke(app, ["run", "nosuch"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "installed: anonymizer, dispatcher, inference, ingest, monitor, trainer" in (
        result.output
    )
