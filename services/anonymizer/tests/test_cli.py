import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import ImplicitVRLittleEndian
from typer.testing import CliRunner

from fetalmlops.anonymizer.cli import app
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture


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


def resent(data: bytes, **changes: object) -> bytes:
    """The same instance re-sent in implicit VR (and, optionally, with an attribute changed)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=True)
    return buffer.getvalue()


def test_inputs_of_one_instance_are_written_once_and_said_to_duplicate(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    studies = [sample_dicom(90 + i) for i in range(5)]
    for i, data in enumerate(studies):
        (src / f"a{i}.dcm").write_bytes(data)
    for i in range(3):  # three of them again, in another transfer syntax
        (src / f"b{i}.dcm").write_bytes(resent(studies[i]))
    env = {"FETALMLOPS_ANONYMIZER_SECRET": "cli-secret"}

    result = CliRunner().invoke(app, [str(src), str(tmp_path / "out")], env=env)

    assert result.exit_code == 0, result.output
    assert "5 anonymized" in result.output and "3 duplicates" in result.output
    assert len(list((tmp_path / "out").glob("*.dcm"))) == 5
    for i in range(3):
        assert f"duplicate {src / f'b{i}.dcm'} is the same instance as {src / f'a{i}.dcm'}" in (
            result.output
        )


def test_an_instance_with_other_content_is_a_conflict_and_never_overwrites(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    study = sample_dicom(95)
    (src / "a.dcm").write_bytes(study)
    (src / "b.dcm").write_bytes(resent(study, WindowCenter="128", WindowWidth="255"))
    env = {"FETALMLOPS_ANONYMIZER_SECRET": "cli-secret"}

    first = CliRunner().invoke(app, [str(src), str(tmp_path / "out")], env=env)
    (written,) = (tmp_path / "out").glob("*.dcm")
    kept = written.read_bytes()
    (src / "a.dcm").unlink()  # a later run that brings only the other content
    again = CliRunner().invoke(app, [str(src), str(tmp_path / "out")], env=env)

    assert first.exit_code == 1 and "1 anonymized" in first.output
    assert f"conflict {src / 'b.dcm'} is the same instance as {src / 'a.dcm'}" in first.output
    assert "with other content: not written" in first.output
    assert again.exit_code == 1 and "already holds another image of this instance" in again.output
    assert written.read_bytes() == kept and "WindowCenter" not in pydicom.dcmread(written)
