"""The Markdown a card is written in: pipe tables, and values that say in words when missing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

FIELD = ("", "Value")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([row(header), row(["---"] * len(header)), *(row(r) for r in rows)])


def fields(rows: Sequence[Sequence[str]]) -> str:
    """A two-column table of named values."""
    return table(FIELD, rows)


def score(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    return f"{value:.3f}"


def signed(value: float) -> str:
    return f"{value:+.3f}"


def setting(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, float) and math.isnan(value):
        return "not set"
    return f"`{value}`"


def shape(sides: Sequence[int]) -> str:
    return " × ".join(str(side) for side in sides)
