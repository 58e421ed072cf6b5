"""The African fetal-planes cohort (Sendra-Balcells et al., Sci Rep 2023; Zenodo 7540448).

``African_planes_database.csv`` with columns ``Filename, Center, Patient_num, Plane`` (and a
train/test flag), images in one folder per centre: ``<Center>/<Filename>.png``. Patient numbers
restart in every centre, so patients are named ``<Center>-<Patient_num>``.
"""

from __future__ import annotations

from pathlib import Path

from fetalmlops.datasets.labels import parse_plane
from fetalmlops.datasets.readers.sample import Collector, Sample, parse_split
from fetalmlops.datasets.readers.table import read_table

CSV_NAME = "African_planes_database.csv"


def read_african(root: Path) -> list[Sample]:
    table = root / CSV_NAME if root.is_dir() else root
    collector = Collector(table)

    def parse(row: dict[str, str]) -> Sample:
        centre, name = row["Center"], row["Filename"]
        if not centre:
            raise ValueError("empty Center")
        filename = name if Path(name).suffix else f"{name}.png"
        return Sample(
            path=table.parent / centre / filename,
            plane=parse_plane(row["Plane"]),
            patient=f"{centre}-{row['Patient_num']}" if row.get("Patient_num") else None,
            split=parse_split(row.get("Train", "")),
            cohort=f"african-{centre.lower()}",
        )

    rows = read_table(table)
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        collector.add(f"row {number}", parse, row)
    return collector.samples()
