"""FETAL_PLANES_DB (Burgos-Artizzu et al., Sci Rep 2020; Zenodo 3904280).

``FETAL_PLANES_DB_data.csv``, `;`-separated:
``Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train `` (the last header has a
trailing space), images in ``Images/<Image_name>.png``.
"""

from __future__ import annotations

from pathlib import Path

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.labels import parse_brain_plane, parse_plane
from fetalmlops.datasets.readers.sample import Collector, Sample, parse_split
from fetalmlops.datasets.readers.table import read_table

CSV_NAME = "FETAL_PLANES_DB_data.csv"
COHORT = "fetal_planes_db"


def read_fetal_planes_db(root: Path) -> list[Sample]:
    table = root / CSV_NAME if root.is_dir() else root
    images = table.parent / "Images"
    collector = Collector(table)

    def parse(row: dict[str, str]) -> Sample:
        plane = parse_plane(row["Plane"])
        return Sample(
            path=images / f"{row['Image_name']}.png",
            plane=plane,
            brain_plane=parse_brain_plane(row["Brain_plane"])
            if plane is Plane.FETAL_BRAIN
            else None,
            patient=row["Patient_num"],
            split=parse_split(row["Train"]),
            cohort=COHORT,
            device=row.get("US_Machine") or None,
        )

    rows = read_table(table, delimiter=";")
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        collector.add(f"row {number}", parse, row)
    return collector.samples()
