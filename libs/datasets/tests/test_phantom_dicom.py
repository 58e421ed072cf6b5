"""Generated DICOM: valid US storage, PHI where the sidecar says, banner outside the region."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import UltrasoundImageStorage

from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate(out, plan(5, seed=21), seed=21, fmt=OutputFormat.BOTH)
    return out


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "labels.csv").open() as handle:
        return list(csv.DictReader(handle))


def strings(ds: Dataset) -> Iterator[str]:
    """Every string value in a dataset, nested sequences and private elements included."""
    for element in ds.iterall():
        values = element.value if element.VM > 1 else [element.value]
        for value in values:
            if isinstance(value, str | pydicom.valuerep.PersonName):
                yield str(value)


def test_every_dicom_reads_back_decodes_and_describes_its_region(dataset: Path) -> None:
    listed = rows(dataset)
    assert len(listed) >= 10
    for row in listed:
        ds = pydicom.dcmread(dataset / row["dicom"])
        assert ds.SOPClassUID == UltrasoundImageStorage and ds.Modality == "US"
        pixels = ds.pixel_array
        assert pixels.shape == (ds.Rows, ds.Columns) and pixels.dtype == np.uint8
        (region,) = ds.SequenceOfUltrasoundRegions
        assert region.RegionSpatialFormat == 1 and region.PhysicalUnitsXDirection == 3
        assert 0 < region.RegionLocationMinX0 < region.RegionLocationMaxX1 < ds.Columns
        assert 0 < region.RegionLocationMinY0 < region.RegionLocationMaxY1 < ds.Rows
        assert ds.BurnedInAnnotation == "YES"
        assert ds.Manufacturer and ds.ManufacturerModelName


def test_sidecar_lists_the_phi_the_file_really_holds(dataset: Path) -> None:
    for row in rows(dataset):
        path = dataset / row["dicom"]
        sidecar = json.loads(path.with_suffix(".phi.json").read_text())
        ds = pydicom.dcmread(path)
        present = set(strings(ds))
        planted = sidecar["planted"]
        paths = {p["path"] for p in planted}
        assert {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"} <= paths
        assert any(p.startswith("RequestAttributesSequence[0].") for p in paths), "nested PHI"
        assert any(p.startswith("(0009,") for p in paths), "PHI in a private block"
        for item in planted:
            assert item["value"] in present, item
        raw = path.read_bytes()
        assert ds.PatientName.family_name.encode() in raw
        assert {ds.StudyInstanceUID, ds.SOPInstanceUID} <= set(sidecar["uids"])


def test_banner_is_burned_in_above_every_region_and_absent_from_the_png(dataset: Path) -> None:
    for row in rows(dataset):
        path = dataset / row["dicom"]
        sidecar = json.loads(path.with_suffix(".phi.json").read_text())
        pixels = pydicom.dcmread(path).pixel_array
        clean = np.asarray(Image.open(dataset / row["path"]))
        assert len(sidecar["burned_in"]) == 4
        for burned in sidecar["burned_in"]:
            x0, y0, x1, y1 = burned["box"]
            for rx0, ry0, rx1, ry1 in sidecar["us_regions"]:
                outside = y1 < ry0 or y0 > ry1 or x1 < rx0 or x0 > rx1
                assert outside, (burned, sidecar["us_regions"])
            assert pixels[y0 : y1 + 1, x0 : x1 + 1].max() > 200, "text is really drawn"
            assert clean[y0 : y1 + 1, x0 : x1 + 1].max() == 0, "the PNG carries no banner"
        (rx0, ry0, rx1, ry1) = sidecar["us_regions"][0]
        inside_dicom = pixels[ry0 : ry1 + 1, rx0 : rx1 + 1]
        assert np.array_equal(inside_dicom, clean[ry0 : ry1 + 1, rx0 : rx1 + 1]), "same scan"


def test_the_clean_side_of_the_dataset_holds_no_phi(dataset: Path) -> None:
    phi = {
        value
        for sidecar in (dataset / "dicom").glob("*.phi.json")
        for value in json.loads(sidecar.read_text())["phi_values"]
    }
    clean_text = (dataset / "labels.csv").read_text() + (dataset / "manifest.json").read_text()
    clean_text += " ".join(p.name for p in dataset.rglob("*"))
    assert phi and not [value for value in phi if value in clean_text]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, plan(2, seed=seed), seed=seed, fmt=OutputFormat.BOTH)
    first, again, other = (sorted((tmp_path / n).rglob("*.*")) for n in "abc")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert {p.read_bytes() for p in first if p.suffix == ".png"}.isdisjoint(
        p.read_bytes() for p in other if p.suffix == ".png"
    )
