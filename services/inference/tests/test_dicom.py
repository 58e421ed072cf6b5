"""A DICOM request becomes exactly the canonical PNG the anonymizer publishes, never its PHI.

The studies are the phantom's: PHI in the header and a banner burned into the pixels above the
sector. The anonymizer runs here for real to say what its canonical PNG of each study is.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import data_store  # the pydicom-data package
import deid_data
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from fetalmlops.anonymizer.images import DICOM, Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import create_engine_for
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import draw, plan
from fetalmlops.datasets.phantom.dicom import to_dataset, uids
from fetalmlops.datasets.phantom.frame import BurnedText
from fetalmlops.imaging.canonical import CANONICAL_SIZE, canonical, union
from fetalmlops.imaging.regions import us_regions
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.dicom import is_dicom, request_picture

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_US = Path(deid_data.__file__).parent / "data" / "ultrasounds"
REAL_WORLD = [
    PYDICOM_DATA / "gdcm-US-ALOKA-16.dcm",  # palette colour, 16 bits
    PYDICOM_DATA / "gdcm-US-ALOKA-16_big.dcm",  # the same, explicit VR big endian
    DEID_US / "GREYSCALE_IMAGE.dcm",
    DEID_US / "RGB_IMAGE.dcm",
    DEID_US / "ultrasound-multiframe.dcm",  # 30 RGB frames: the first is the canonical one
]


@dataclass(frozen=True)
class Study:
    dataset: Dataset
    banner: tuple[BurnedText, ...]
    phi: list[str]  # every value planted in the header and every banner line

    @property
    def data(self) -> bytes:
        return encoded(self.dataset)


def encoded(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def phantom(seed: int, profile: str = "highend-a") -> Study:
    spec = plan(1, seed, (profile,))[0]
    frame = draw(spec, seed, 0.5, banner=True)
    study = uids(seed, spec.patient, spec.visit_index, 1, spec.image_id)
    ds, planted = to_dataset(
        frame, spec.profile, spec.patient, spec.visit, study, spec.instance_number
    )
    phi = [p.value for p in planted] + spec.patient.phi_values()
    phi += [line.text for line in frame.burned_in]
    return Study(ds, frame.burned_in, list(dict.fromkeys(phi)))


def changed(study: Study, change: Callable[[Dataset], object]) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(study.data))
    change(ds)
    return encoded(ds)


@pytest.fixture(scope="module")
def anonymizer(tmp_path_factory: pytest.TempPathFactory) -> Anonymizer:
    """The anonymizer service's consumer; only its ``deidentify`` is used here."""
    root = tmp_path_factory.mktemp("anonymizer")
    url = f"sqlite:///{root}/catalog.db"
    settings = Settings(store_dir=root / "objects", database_url=url)
    own = AnonymizerSettings(secret="inference-dicom")
    return Anonymizer(
        settings, own, LocalStore(settings.store_dir), EmbeddedBus(1), create_engine_for(url)
    )


def pixels_of(png: bytes) -> np.ndarray:  # type: ignore[type-arg]
    with Image.open(io.BytesIO(png)) as picture:
        assert (picture.format, picture.mode) == ("PNG", "L")
        return np.asarray(picture)


@pytest.mark.parametrize(("seed", "profile"), [(5, "highend-a"), (8, "highend-b")])
def test_a_phantom_study_gives_the_anonymizers_canonical_png(
    anonymizer: Anonymizer, seed: int, profile: str
) -> None:
    data = phantom(seed, profile).data

    assert is_dicom(data)
    assert request_picture(data) == anonymizer.deidentify(data, DICOM).canonical_png


@pytest.mark.parametrize("path", REAL_WORLD, ids=lambda path: path.name)
def test_real_world_ultrasound_gives_the_anonymizers_canonical_png(
    anonymizer: Anonymizer, path: Path
) -> None:
    data = path.read_bytes()

    picture = request_picture(data)

    assert picture == anonymizer.deidentify(data, DICOM).canonical_png
    assert pixels_of(picture).shape == (CANONICAL_SIZE, CANONICAL_SIZE)


def with_a_corner_region(ds: Dataset) -> None:
    corner = Dataset()
    corner.RegionLocationMinX0 = corner.RegionLocationMinY0 = 0
    corner.RegionLocationMaxX1 = corner.RegionLocationMaxY1 = 2
    ds.SequenceOfUltrasoundRegions = Sequence([*ds.SequenceOfUltrasoundRegions, corner])


def test_a_banner_inside_the_regions_union_is_blanked() -> None:
    """With a second region in the top-left corner, the union spans the banner; only the
    blanking outside the regions themselves keeps it from the picture."""
    study = phantom(5)
    data = changed(study, with_a_corner_region)
    raw = pydicom.dcmread(io.BytesIO(data))
    box = union(us_regions(raw))
    assert box is not None and box[:2] == (0, 0)
    x1, y1 = box[2], box[3]
    side = max(x1 + 1, y1 + 1)
    left, top = (side - (x1 + 1)) // 2, (side - (y1 + 1)) // 2
    scale = CANONICAL_SIZE / side

    cleaned = pixels_of(request_picture(data))
    uncleaned = pixels_of(canonical(raw.pixel_array, box))

    for line in study.banner:
        bx0, by0, bx1, by1 = line.box
        # The box in the canonical picture, a pixel inside each edge: bilinear resampling
        # blends only the zeros around it there.
        inside = (
            slice(int((by0 + top) * scale) + 1, int((by1 + top) * scale)),
            slice(int((bx0 + left) * scale) + 1, int((bx1 + left) * scale)),
        )
        assert uncleaned[inside].any(), f"the banner line {line.box} would show uncleaned"
        assert not cleaned[inside].any(), f"the banner line {line.box} survived"


def test_the_request_picture_holds_no_planted_value() -> None:
    study = phantom(5)

    picture = request_picture(study.data)

    with Image.open(io.BytesIO(picture)) as png:
        assert set(png.info) <= {"dpi"}  # no text chunk
    assert [v for v in study.phi if v.encode("latin-1") in picture] == []


def without_regions(ds: Dataset) -> None:
    del ds.SequenceOfUltrasoundRegions


def without_pixels(ds: Dataset) -> None:
    del ds.PixelData


def regions_without_location(ds: Dataset) -> None:
    del ds.SequenceOfUltrasoundRegions[0].RegionLocationMaxY1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (without_regions, "cannot be cleaned: send the anonymizer's cleaned PNG instead"),
        (regions_without_location, "cannot be cleaned"),
        (without_pixels, "holds no pixel data"),
    ],
)
def test_a_study_that_cannot_be_cleaned_is_refused_without_quoting_it(
    change: Callable[[Dataset], None], reason: str
) -> None:
    study = phantom(5)

    with pytest.raises(ValueError, match=reason) as refused:
        request_picture(changed(study, change))

    assert [v for v in study.phi if v in str(refused.value)] == []


PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


def half_the_pixels(data: bytes) -> bytes:
    return data[: len(data) // 2]


def the_header_alone(data: bytes) -> bytes:
    return data[: data.index(PIXEL_DATA_TAG)]


def a_corrupt_deflated_body(data: bytes) -> bytes:
    """The file deflated (PS3.5 A.5), then 64 bytes of its compressed stream flipped."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = encoded(ds)
    body = 132 + 12 + int.from_bytes(deflated[140:144], "little")  # after the file meta group
    return (
        deflated[:body]
        + bytes(b ^ 0x5A for b in deflated[body : body + 64])
        + deflated[body + 64 :]
    )


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (half_the_pixels, "pixel data cannot be decoded"),
        (the_header_alone, "holds no pixel data"),
        (a_corrupt_deflated_body, "cannot be read"),
    ],
)
def test_a_truncated_or_broken_study_is_refused_without_quoting_it(
    cut: Callable[[bytes], bytes], reason: str
) -> None:
    study = phantom(5)
    data = cut(study.data)
    assert is_dicom(data)

    with pytest.raises(ValueError, match=reason) as refused:
        request_picture(data)

    assert [v for v in study.phi if v in str(refused.value)] == []


def test_pydicom_complaining_of_a_value_neither_warns_nor_logs_it(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    """pydicom warns and logs a value it cannot take as it is, quoting it: here the patient's
    birth date made a Number of Frames (IS, an integer string), which the service must read."""
    study = phantom(5)
    birth_date = str(study.dataset.PatientBirthDate)
    assert birth_date in study.phi
    data = changed(study, lambda ds: ds.add_new(0x00280008, "IS", f"{birth_date}.5"))
    caplog.clear()
    recwarn.clear()
    caplog.set_level(logging.DEBUG)

    # The header's frame count is refused before a pixel is decoded, and not repeated.
    with pytest.raises(ValueError, match="over the limit of 1000 frames") as refused:
        request_picture(data)

    assert birth_date not in str(refused.value)
    assert [r.getMessage() for r in caplog.records] == []
    assert [str(w.message) for w in recwarn] == []
    logging.getLogger("pydicom").warning("after")  # the silence ends with the reading
    assert [r.getMessage() for r in caplog.records] == ["after"]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, b"\x00" * 128 + b"DICX" + b"\x00" * 64],
    ids=["empty", "png", "wrong-prefix"],
)
def test_what_is_not_part_10_is_neither_detected_nor_read(data: bytes) -> None:
    assert not is_dicom(data)
    with pytest.raises(ValueError, match="not a DICOM Part 10 file"):
        request_picture(data)


def test_a_cine_is_pictured_by_its_first_frame() -> None:
    path = DEID_US / "ultrasound-multiframe.dcm"
    ds = pydicom.dcmread(path)
    frames, box = ds.pixel_array, union(us_regions(ds))
    assert len(us_regions(ds)) == 1, "one region: blanking outside it changes nothing cropped"

    picture = request_picture(path.read_bytes())

    assert picture == canonical(frames[0], box)
    assert picture != canonical(frames[-1], box)


def test_the_archive_serves_a_dicom_as_its_canonical_png(
    layout: ModelLayout, anonymizer: Anonymizer, tmp_path: Path
) -> None:
    archive = open_version(layout.root, tmp_path / "cache")
    study = phantom(5)
    published = anonymizer.deidentify(study.data, DICOM).canonical_png

    from_dicom = archive.decode({"b64": base64.b64encode(study.data).decode()}).tensor

    assert torch.equal(from_dicom, archive.decode(published).tensor)
    assert torch.equal(archive.decode(study.data).tensor, from_dicom)  # raw bytes too
    with pytest.raises(ValueError, match="cannot be cleaned") as refused:
        archive.decode(changed(study, without_regions))
    assert [v for v in study.phi if v in str(refused.value)] == []
