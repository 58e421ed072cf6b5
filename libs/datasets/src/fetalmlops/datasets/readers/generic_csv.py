"""The generic CSV: ``path,label[,patient][,split][,cohort][,brain_plane]``.

Paths are relative to the CSV's folder (or absolute). The phantom writes this format, with
extra columns that readers ignore.
"""

from __future__ import annotations

from pathlib import Path

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.labels import parse_brain_plane, parse_plane
from fetalmlops.datasets.readers.sample import Collector, Sample, parse_split
from fetalmlops.datasets.readers.table import read_table


def read_generic_csv(table: Path) -> list[Sample]:
    collector = Collector(table)

    def parse(row: dict[str, str]) -> Sample:
        if not row["path"]:
            raise ValueError("empty path")
        plane = parse_plane(row["label"])
        brain = row.get("brain_plane", "")
        return Sample(
            path=(table.parent / row["path"]).resolve(),
            plane=plane,
            brain_plane=parse_brain_plane(brain) if plane is Plane.FETAL_BRAIN else None,
            patient=row.get("patient") or None,
            split=parse_split(row.get("split", "")),
            cohort=row.get("cohort") or None,
            device=row.get("device") or row.get("profile") or None,
        )

    rows = read_table(table, delimiter=",")
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        collector.add(f"row {number}", parse, row)
    return collector.samples()
