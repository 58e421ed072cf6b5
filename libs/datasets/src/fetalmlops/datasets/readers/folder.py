"""A folder per class: ``<root>/<label>/**/<image>`` with PNG, JPEG or DICOM files."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fetalmlops.datasets.labels import parse_plane
from fetalmlops.datasets.readers.sample import IMAGE_SUFFIXES, Collector, Problem, Sample


def read_folder(root: Path) -> list[Sample]:
    collector = Collector(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            plane = parse_plane(folder.name)
        except ValueError as exc:
            collector.problems.append(Problem(str(folder), str(exc)))
            continue
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for image in images:
            collector.add(str(image.relative_to(root)), partial(Sample, plane=plane), image)
    return collector.samples()
