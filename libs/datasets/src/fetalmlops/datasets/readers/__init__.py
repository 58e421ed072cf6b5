"""Readers for real fetal-ultrasound dataset formats, mapped onto the canonical planes.

``read_dataset(path)`` detects the format; each reader collects every bad row (unknown label,
missing file, duplicate) and raises one ``DatasetError`` that lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from fetalmlops.datasets.readers import african, fetal_planes_db
from fetalmlops.datasets.readers.african import read_african
from fetalmlops.datasets.readers.fetal_planes_db import read_fetal_planes_db
from fetalmlops.datasets.readers.folder import read_folder
from fetalmlops.datasets.readers.generic_csv import read_generic_csv
from fetalmlops.datasets.readers.sample import DatasetError, Problem, Sample, Split

__all__ = ["DatasetError", "DatasetFormat", "Problem", "Sample", "Split", "detect", "read_dataset"]

GENERIC_CSV_NAME = "labels.csv"


class DatasetFormat(StrEnum):
    FETAL_PLANES_DB = "fetal-planes-db"
    AFRICAN = "african"
    FOLDER = "folder"
    CSV = "csv"


READERS: dict[DatasetFormat, Callable[[Path], list[Sample]]] = {
    DatasetFormat.FETAL_PLANES_DB: read_fetal_planes_db,
    DatasetFormat.AFRICAN: read_african,
    DatasetFormat.FOLDER: read_folder,
    DatasetFormat.CSV: lambda path: read_generic_csv(
        path / GENERIC_CSV_NAME if path.is_dir() else path
    ),
}


def detect(path: Path) -> DatasetFormat:
    """Which reader a path needs, from the files it holds."""
    names = {path.name} if path.is_file() else {p.name for p in path.iterdir()}
    if fetal_planes_db.CSV_NAME in names:
        return DatasetFormat.FETAL_PLANES_DB
    if african.CSV_NAME in names:
        return DatasetFormat.AFRICAN
    if path.is_file() or GENERIC_CSV_NAME in names:
        return DatasetFormat.CSV
    return DatasetFormat.FOLDER


def read_dataset(path: Path, fmt: DatasetFormat | None = None) -> list[Sample]:
    if not path.exists():
        raise DatasetError(path, [Problem(str(path), "no such file or folder")])
    return READERS[fmt or detect(path)](path)
