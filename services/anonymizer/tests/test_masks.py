"""Images that name no imaging region are cleaned by a configured mask, by device or frame size."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as Picture

from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import create_engine_for, upgrade
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.imaging.regions import NoRegions


@pytest.fixture(scope="module")
def without_regions(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[bytes, dict, tuple[int, int, int, int]]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("masked")
    generate(out, plan(1, seed=61, profiles=("highend-b",)), seed=61, fmt=OutputFormat.DICOM)
    path = sorted((out / "dicom").glob("*.dcm"))[0]
    sidecar = json.loads(path.with_suffix(".phi.json").read_text())
    ds = pydicom.dcmread(path)
    del ds.SequenceOfUltrasoundRegions
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), sidecar, tuple(sidecar["us_regions"][0])


def test_a_size_mask_cleans_a_dicom_without_regions(without_regions: tuple) -> None:  # type: ignore[type-arg]
    data, sidecar, region = without_regions
    with pytest.raises(NoRegions):
        anonymize_dicom(data, Policy(secret=b"m"))
    policy = Policy(secret=b"m", masks={"768x576": [region]})
    pixels = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, policy).data)).pixel_array
    for burned in sidecar["burned_in"]:
        x0, y0, x1, y1 = burned["box"]
        assert not pixels[y0 : y1 + 1, x0 : x1 + 1].any()


def test_a_device_mask_wins_over_the_size_mask(without_regions: tuple) -> None:  # type: ignore[type-arg]
    data, _, region = without_regions
    policy = Policy(
        secret=b"m", masks={"Meridian Imaging/Meridian V7": [region], "768x576": [(0, 0, 10, 10)]}
    )
    pixels = pydicom.dcmread(io.BytesIO(anonymize_dicom(data, policy).data)).pixel_array
    x0, y0, x1, y1 = region
    assert pixels[y0 : y1 + 1, x0 : x1 + 1].any(), "the device's region was kept"


def test_a_picture_with_a_burned_banner_is_cleaned_by_its_size_mask(
    without_regions: tuple, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    data, sidecar, region = without_regions
    screenshot = io.BytesIO()
    Picture.fromarray(pydicom.dcmread(io.BytesIO(data)).pixel_array).save(screenshot, "PNG")
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    own = AnonymizerSettings(secret="m", masks={"768x576": [list(region)]})
    anonymizer = Anonymizer(
        settings, own, LocalStore(settings.store_dir), EmbeddedBus(), create_engine_for(url)
    )
    output = anonymizer.deidentify(screenshot.getvalue(), "image/png")
    pixels = np.asarray(Picture.open(io.BytesIO(output.data)))
    for burned in sidecar["burned_in"]:
        x0, y0, x1, y1 = burned["box"]
        assert not pixels[y0 : y1 + 1, x0 : x1 + 1].any()
    x0, y0, x1, y1 = region
    assert pixels[y0 : y1 + 1, x0 : x1 + 1].any()
