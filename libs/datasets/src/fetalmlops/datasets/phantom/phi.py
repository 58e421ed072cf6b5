"""Planted PHI and the search for it: what leak tests look for, and how they look.

The phantom writes a sidecar beside every study (`<study>.phi.json`) naming every identifying
value it planted: header values, UIDs, private and nested elements, burned-in banner lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sidecar(study: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(study.with_suffix(".phi.json").read_text())
    return document


def planted_phi(sidecars: Iterable[dict[str, Any]]) -> set[str]:
    values: set[str] = set()
    for planted in sidecars:
        values |= set(planted["phi_values"]) | set(planted["uids"])
        values |= {p["value"] for p in planted["planted"]}
        values |= {line["text"] for line in planted["burned_in"]}
    # A bare number shorter than a date (the 6-digit StudyID) turns up by chance among the sizes,
    # counts and floats of a database the stack shares across runs; the anonymizer's own tests
    # check it in the output bytes.
    return {v for v in values if len(v) >= 6 and not (v.isdigit() and len(v) < 8)}


def hits(phi: set[str], channel: Iterable[bytes]) -> set[str]:
    """Planted values found as values of their own (not inside a longer number, a decimal
    fraction or a word)."""
    blobs = list(channel)
    patterns = {
        v: re.compile(rb"(?<![0-9A-Za-z.])" + re.escape(v.encode()) + rb"(?![0-9A-Za-z])")
        for v in phi
    }
    return {v for v, pattern in patterns.items() for blob in blobs if pattern.search(blob)}
