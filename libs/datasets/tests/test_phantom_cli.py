from pathlib import Path

from typer.testing import CliRunner

from fetalmlops.datasets.phantom.cli import app


def test_generate_command_writes_a_dataset_with_a_progress_bar(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["generate", "--patients", "2", "--out", str(out), "--format", "dicom"]
    result = CliRunner().invoke(app, [*args, "--profile", "portable", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "rendering" in result.output and "images of 2 patients" in result.output
    assert {p.name for p in out.iterdir()} == {"dicom", "labels.csv", "manifest.json"}
    assert "portable" in (out / "manifest.json").read_text()


def test_unknown_profile_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    args = ["generate", "--patients", "1", "--out", str(tmp_path), "--profile", "x"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "unknown scanner profile" in result.output and "highend-a" in result.output
    assert not any(tmp_path.iterdir())


def test_profiles_command_lists_every_profile() -> None:
    result = CliRunner().invoke(app, ["profiles"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ("highend-a", "highend-b", "portable"))
