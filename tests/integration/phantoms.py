"""Phantom datasets for runs that share the stack's catalog: each cohort named for the run, so a
snapshot that asks for the run's cohorts never takes the catalog's older images."""

from __future__ import annotations

import csv
from pathlib import Path


def tag_cohorts(out: Path, tag: str) -> Path:
    """Rewrite ``out/labels.csv`` with every cohort renamed ``<cohort>-<tag>``; returns ``out``."""
    labels = out / "labels.csv"
    rows = list(csv.DictReader(labels.open()))
    for row in rows:
        row["cohort"] = f"{row['cohort']}-{tag}"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out
