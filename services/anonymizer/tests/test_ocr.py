"""The OCR fallback: frames that name no imaging region lose the text Tesseract reads.

Runs the real `tesseract` program (Debian's tesseract-ocr: `make system-packages`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from fetalmlops.anonymizer import ocr
from fetalmlops.anonymizer.pipeline import anonymize_dicom, anonymize_picture
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.imaging.regions import NoRegions

OCR = Policy(secret=b"ocr-secret", ocr=True)


@pytest.fixture(scope="module")
def regionless(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, dict]]:  # type: ignore[type-arg]
    """Phantom studies with their SequenceOfUltrasoundRegions removed, and their sidecars."""
    out = tmp_path_factory.mktemp("ocr")
    generate(out, plan(2, seed=31), seed=31, fmt=OutputFormat.DICOM)
    cases = []
    for path in sorted((out / "dicom").glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        del ds.SequenceOfUltrasoundRegions
        buffer = io.BytesIO()
        ds.save_as(buffer)
        cases.append((buffer.getvalue(), json.loads(path.with_suffix(".phi.json").read_text())))
    return cases


def banner_text(pixels: np.ndarray) -> str:  # type: ignore[type-arg]
    return " ".join(w.text for w in ocr.words(ocr.overlay(pixels, 1)))


@pytest.mark.needs("tesseract")
def test_tesseract_reads_the_phantom_banner(regionless: list[tuple[bytes, dict]]) -> None:  # type: ignore[type-arg]
    data, sidecar = regionless[0]
    text = banner_text(pydicom.dcmread(io.BytesIO(data)).pixel_array)
    assert sidecar["burned_in"][1]["text"].split()[-1] in text  # the MRN, read from pixels


@pytest.mark.needs("tesseract")
def test_without_regions_ocr_blanks_the_banner_and_keeps_the_sector(
    regionless: list[tuple[bytes, dict]],  # type: ignore[type-arg]
) -> None:
    for data, sidecar in regionless:
        with pytest.raises(NoRegions):
            anonymize_dicom(data, Policy(secret=b"ocr-secret"))
        out = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, OCR).data))
        before, after = pydicom.dcmread(io.BytesIO(data)).pixel_array, out.pixel_array

        for line in sidecar["burned_in"]:
            x0, y0, x1, y1 = line["box"]
            assert after[y0 : y1 + 1, x0 : x1 + 1].max() == 0, line["text"]
        text = banner_text(after)
        for line in sidecar["burned_in"]:
            assert not any(word in text for word in line["text"].split() if len(word) > 3)
        x0, y0, x1, y1 = sidecar["us_regions"][0]
        sector = (before[y0 : y1 + 1, x0 : x1 + 1], after[y0 : y1 + 1, x0 : x1 + 1])
        assert np.mean(sector[0] == sector[1]) > 0.97, "OCR blanks words, not anatomy"
        assert out.BurnedInAnnotation == "NO"
        assert "OCR" in out.DeidentificationMethod


@pytest.mark.needs("tesseract")
def test_a_picture_without_a_mask_is_cleaned_by_ocr(
    regionless: list[tuple[bytes, dict]],  # type: ignore[type-arg]
) -> None:
    data, sidecar = regionless[0]
    png = io.BytesIO()
    Image.fromarray(pydicom.dcmread(io.BytesIO(data)).pixel_array).save(png, "PNG")

    with pytest.raises(NoRegions):
        anonymize_picture(png.getvalue(), Policy(secret=b"ocr-secret"))
    clean = anonymize_picture(png.getvalue(), OCR)

    x0, y0, x1, y1 = sidecar["burned_in"][0]["box"]
    assert clean.pixels[y0 : y1 + 1, x0 : x1 + 1].max() == 0
    assert sidecar["burned_in"][0]["text"].split(",")[0] not in banner_text(clean.pixels)


def test_ocr_without_tesseract_is_a_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ocr.OcrUnavailable, match="apt-get install tesseract-ocr"):
        ocr.finder(60.0)
