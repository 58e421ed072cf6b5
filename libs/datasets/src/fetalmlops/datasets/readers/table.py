"""CSV tables as real datasets write them: BOM, `;` or `,`, padded header names."""

from __future__ import annotations

import csv
from pathlib import Path


def read_table(path: Path, delimiter: str | None = None) -> list[dict[str, str]]:
    """Rows as dicts keyed by the stripped header (FETAL_PLANES_DB writes "Train " with a space)."""
    text = path.read_text(encoding="utf-8-sig")
    if delimiter is None:
        delimiter = (
            csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t").delimiter
        )
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    return [
        {name: value.strip() for name, value in zip(header, row, strict=False)}
        for row in reader
        if any(cell.strip() for cell in row)
    ]
