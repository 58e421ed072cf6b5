"""Datasets on disk, for users who train outside the platform (`fetalmlops train --dataset`).

Any format the dataset readers know (FETAL_PLANES_DB, the African cohort, folder per class,
CSV) becomes snapshot entries; the dataset's own split is kept when every image has one. A
DICOM file is read as its canonical picture (`fetalmlops.imaging.canonical`), the very bytes
the anonymizer publishes for it, so a model trained here sees what the platform gives it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pydicom

from fetalmlops.datasets.readers import DatasetFormat, read_dataset
from fetalmlops.imaging.canonical import canonical_picture
from fetalmlops.imaging.quiet import quiet_pydicom
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
    """The canonical picture of a DICOM file, as the anonymizer publishes it for a study and
    the inference service makes it of a DICOM request: no training/serving skew."""
    with quiet_pydicom():
        ds = pydicom.dcmread(io.BytesIO(data))
    return canonical_picture(ds)
