from pathlib import Path

import pydicom
from typer.testing import CliRunner

from fetalmlops.anonymizer.cli import app
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan


def test_anonymize_a_folder_and_refuse_what_is_not_dicom(tmp_path: Path) -> None:
    generate(tmp_path / "in", plan(2, seed=4), seed=4, fmt=OutputFormat.DICOM)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    env = {"FETALMLOPS_ANONYMIZER_SECRET": "cli-secret"}
    result = CliRunner().invoke(
        app, [str(tmp_path / "in" / "dicom"), str(tmp_path / "out")], env=env
    )
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert result.exit_code == 1, result.output  # the .phi.json sidecars are refused
    assert written and all(p.name.startswith("2.25.") for p in written)
    assert all(pydicom.dcmread(p).PatientIdentityRemoved == "YES" for p in written)
    assert "not a readable DICOM file" in result.output


def test_no_secret_no_anonymization(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, [str(tmp_path), str(tmp_path / "out")], env={"FETALMLOPS_ANONYMIZER_SECRET": ""}
    )
    assert result.exit_code == 2 and "FETALMLOPS_ANONYMIZER_SECRET" in result.output
