from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from typer.testing import CliRunner

from fetalmlops.anonymizer.cli import app
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.samples import sample_picture


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
    assert "not a readable DICOM, PNG or JPEG" in result.output


def test_no_secret_no_anonymization(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, [str(tmp_path), str(tmp_path / "out")], env={"FETALMLOPS_ANONYMIZER_SECRET": ""}
    )
    assert result.exit_code == 2 and "FETALMLOPS_ANONYMIZER_SECRET" in result.output


def test_pictures_are_anonymized_by_mask_or_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(sample_picture(3))
    (tmp_path / "in" / "b.jpg").write_bytes(sample_picture(4, "JPEG"))
    base = {"FETALMLOPS_ANONYMIZER_SECRET": "cli-secret"}
    masked = {**base, "FETALMLOPS_ANONYMIZER_MASKS": '{"800x600": [[80, 60, 720, 560]]}'}

    refused = CliRunner().invoke(app, [str(tmp_path / "in"), str(tmp_path / "no")], env=base)
    done = CliRunner().invoke(app, [str(tmp_path / "in"), str(tmp_path / "out")], env=masked)

    assert refused.exit_code == 1 and "NoRegions" in refused.output
    assert done.exit_code == 0, done.output
    written = sorted((tmp_path / "out").glob("img-*.png"))
    assert len(written) == 2
    pixels = np.asarray(Image.open(written[0]))
    assert pixels[:60].max() == 0 and pixels[561:].max() == 0  # outside the mask: blank
