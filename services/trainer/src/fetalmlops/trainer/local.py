"""Datasets on disk, for users who train outside the platform (`fetalmlops train --dataset`).

Any format the dataset readers know (FETAL_PLANES_DB, the African cohort, folder per class,
CSV) becomes snapshot entries; the dataset's own split is kept when every image has one. A
DICOM file is read as its first frame cropped to its imaging region: what the anonymizer's
canonical picture shows, so a model trained here sees what the platform would give it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from fetalmlops.datasets.readers import DatasetFormat, read_dataset
from fetalmlops.trainer.snapshots import Entry


def dataset_entries(path: Path, fmt: DatasetFormat | None = None) -> list[Entry]:
    return [
        Entry(
            image_id=hashlib.sha256(str(sample.path.resolve()).encode()).hexdigest()[:16],
            plane=sample.plane.value,
            source=str(sample.path),
            patient=sample.patient or "",
            cohort=sample.cohort or "",
            device=sample.device or "",
            brain_plane=sample.brain_plane.value if sample.brain_plane else "",
            given_split=sample.split.value if sample.split else "",
        )
        for sample in read_dataset(path, fmt)
    ]


def file_loader(entry: Entry) -> Callable[[], bytes]:
    path = Path(entry.source)
    if path.suffix.lower() == ".dcm":
        return lambda: dicom_picture(path.read_bytes())
    return path.read_bytes


def dicom_picture(data: bytes) -> bytes:
    """PNG of a DICOM's first frame, greyscale, cropped to the union of its US regions."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array[0] if frames > 1 else ds.pixel_array
    picture = Image.fromarray(np.asarray(pixels)).convert("L")
    regions = [
        (r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1)
        for r in ds.get("SequenceOfUltrasoundRegions", [])
    ]
    if regions:
        left, top = min(r[0] for r in regions), min(r[1] for r in regions)
        right, bottom = max(r[2] for r in regions), max(r[3] for r in regions)
        picture = picture.crop((left, top, right + 1, bottom + 1))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()
