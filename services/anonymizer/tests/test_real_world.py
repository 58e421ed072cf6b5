"""Real-world ultrasound DICOM that no one here wrote (pydicom-data, deid-data).

JPEG 2000 (YBR_ICT, YBR_RCT), RGB, 16-bit palette colour, big-endian, a 30-frame RGB cine,
greyscale and RGB stills. Each is de-identified with the service's pipeline: no identifying
string of the source survives in the header, pixels outside the US regions are blanked, pixels
inside are untouched. Files that say nothing of their regions cannot have their pixels cleaned
and are refused; their headers alone still come out clean.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import data_store  # the pydicom-data package
import deid_data
import numpy as np
import pydicom
import pytest

from fetalmlops.anonymizer.deidentify import deidentify
from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.verify import _header
from fetalmlops.imaging.regions import NoRegions, region_mask, us_regions

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_US = Path(deid_data.__file__).parent / "data" / "ultrasounds"
WITH_REGIONS = {
    "gdcm-US-ALOKA-16.dcm": PYDICOM_DATA,  # palette colour, 16 bits
    "gdcm-US-ALOKA-16_big.dcm": PYDICOM_DATA,  # the same, explicit VR big endian
    "GREYSCALE_IMAGE.dcm": DEID_US,
    "RGB_IMAGE.dcm": DEID_US,
    "ultrasound-multiframe.dcm": DEID_US,  # 30 RGB frames
}
WITHOUT_REGIONS = ["US1_J2KI.dcm", "US1_J2KR.dcm", "US1_UNCI.dcm", "US1_UNCR.dcm"]
POLICY = Policy(secret=b"real-world")


def read(path: Path) -> bytes:
    return path.read_bytes()


def pixels(data: bytes) -> np.ndarray:  # type: ignore[type-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data)).pixel_array


@pytest.mark.parametrize("name", sorted(WITH_REGIONS))
def test_files_with_regions_come_out_clean(name: str) -> None:
    data = read(WITH_REGIONS[name] / name)
    source = pydicom.dcmread(io.BytesIO(data))
    result = anonymize_dicom(data, POLICY)
    out = pydicom.dcmread(io.BytesIO(result.data))
    phi = deidentify(source, POLICY).phi
    assert phi, "the source had identifying strings to remove"
    assert [v for v in phi if v.encode("latin-1", "ignore") in _header(result.data)] == []
    assert out.PatientIdentityRemoved == "YES" and out.BurnedInAnnotation == "NO"
    before, after = pixels(data), pixels(result.data)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    mask = region_mask(int(source.Rows), int(source.Columns), us_regions(source))
    keep = mask if frames == 1 else np.broadcast_to(mask, (frames, *mask.shape))
    if before.ndim == keep.ndim + 1:
        keep = keep[..., None]
    keep = np.broadcast_to(keep, before.shape)
    assert np.array_equal(before[keep], after[keep]), "inside the regions nothing changes"
    assert not after[~keep].any(), "outside the regions everything is blank"


@pytest.mark.parametrize("name", WITHOUT_REGIONS)
def test_files_without_regions_are_refused_but_their_headers_clean(name: str) -> None:
    data = read(PYDICOM_DATA / name)
    with pytest.raises(NoRegions):
        anonymize_dicom(data, POLICY)
    header_only = Policy(secret=b"real-world", clean_pixel_data=False)
    result = anonymize_dicom(data, header_only)
    phi = deidentify(pydicom.dcmread(io.BytesIO(data)), header_only).phi
    assert phi and [v for v in phi if v.encode() in _header(result.data)] == []


@pytest.mark.parametrize("archive", ["GREYSCALE_CINE.zip", "RGB_CINE.zip"])
def test_cine_loops(archive: str) -> None:
    with zipfile.ZipFile(DEID_US / archive) as bundle:
        data = bundle.read(bundle.namelist()[0])
    try:
        result = anonymize_dicom(data, POLICY)
    except NoRegions:
        pytest.skip("this cine carries no US regions")
    assert pydicom.dcmread(io.BytesIO(result.data)).PatientIdentityRemoved == "YES"
