"""Keyed pseudonyms: the same input and secret always give the same output; nothing reverses it.

HMAC-SHA256 with the service's secret replaces UIDs (as ``2.25.`` UIDs, PS3.5 B.2), patient IDs
and device serials, and derives each patient's date shift, so a patient's studies stay linked
and their intervals preserved without the original values ever leaving the raw zone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

MAX_SHIFT_DAYS = 3650


def digest(secret: bytes, *parts: str) -> bytes:
    return hmac.new(secret, "\x1f".join(parts).encode(), hashlib.sha256).digest()


def uid(secret: bytes, original: str) -> str:
    return f"2.25.{int.from_bytes(digest(secret, 'uid', original)[:16], 'big')}"


def patient_pseudonym(secret: bytes, patient_id: str) -> str:
    return "FM" + digest(secret, "patient", patient_id).hex()[:20].upper()


def opaque(secret: bytes, kind: str, value: str) -> str:
    """A pseudonym for any other identifier (device serial, station), prefixed by its kind."""
    return f"{kind}-{digest(secret, kind, value).hex()[:12]}"


def date_shift(secret: bytes, patient_id: str) -> timedelta:
    """One shift per patient, between one and ten years back: intervals survive, dates do not."""
    days = 1 + int.from_bytes(digest(secret, "date-shift", patient_id)[:4], "big") % MAX_SHIFT_DAYS
    return timedelta(days=-days)


def shift_da(value: str, shift: timedelta) -> str:
    """A DA (YYYYMMDD) moved by whole days; an unparsable date becomes empty."""
    try:
        return (datetime.strptime(value.strip()[:8], "%Y%m%d").date() + shift).strftime("%Y%m%d")
    except ValueError:
        return ""


def shift_dt(value: str, shift: timedelta) -> str:
    """A DT keeps its time and offset; only its date part moves."""
    text = value.strip()
    moved = shift_da(text[:8], shift)
    return moved + text[8:] if moved else ""
