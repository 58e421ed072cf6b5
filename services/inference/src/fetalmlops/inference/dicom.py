"""A DICOM request, cleaned as the anonymizer cleans it, into the picture a model was trained on.

A caller may send the scanner's own Part 10 file rather than the anonymizer's canonical PNG. Its
header names the patient and its pixels carry the banner the scanner burned in beside the
sector. The file is cleaned exactly as the anonymizer cleans a study before it publishes it:
everything outside the SequenceOfUltrasoundRegions (PS3.3 C.8.5.5) is blanked, then the first
frame is cropped to the union of those regions and harmonised by the same `canonical`. A model
is thus served the very picture it was trained on, and never sees a banner.

Nothing of the header leaves this module: every refusal is a fixed sentence, and pydicom's
warnings and log records, which quote the values they complain of, are silenced. A file that
says nothing of its imaging region cannot be cleaned here (no configured mask, no OCR) and is
refused. A file whose header declares more pixels or frames than the limits allow is refused
(`limits.TooLarge`) before its pixel data is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from fetalmlops.imaging.canonical import CANONICAL_SIZE, canonical_picture
from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.imaging.regions import us_regions
from fetalmlops.inference.limits import ImageLimits, check_size

# PS3.10 7.1: a 128-byte preamble, then the prefix "DICM".
PREAMBLE_BYTES = 128
PREFIX = b"DICM"

NOT_DICOM = "not a DICOM Part 10 file (no DICM prefix after the 128-byte preamble)"
UNREADABLE = "the DICOM file cannot be read (truncated or malformed)"
NO_PIXELS = "the DICOM file holds no pixel data"
UNCLEANABLE = (
    "the DICOM file has no SequenceOfUltrasoundRegions with a location, so its burned-in text "
    "cannot be cleaned: send the anonymizer's cleaned PNG instead"
)
UNDECODABLE = "the DICOM file's pixel data cannot be decoded"


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` begins as a DICOM Part 10 file does."""
    return data[PREAMBLE_BYTES : PREAMBLE_BYTES + len(PREFIX)] == PREFIX


@dataclass(frozen=True)
class Scanner:
    """The scanner's make and model: kept on purpose, as `ImageReceived.device` keeps them,
    since a change of scanner is what drift monitoring must be able to see."""

    manufacturer: str
    model: str


@dataclass(frozen=True)
class CleanedRequest:
    png: bytes  # the canonical picture
    scanner: Scanner | None


def request_picture(
    data: bytes, size: int = CANONICAL_SIZE, limits: ImageLimits | None = None
) -> bytes:
    """The canonical PNG the anonymizer would publish for the study in ``data``
    (`fetalmlops.imaging.canonical.canonical_picture`, after the checks a request needs).

    Raises ValueError, its message free of any value of the file, when ``data`` is not a
    Part 10 file, cannot be read, holds no pixel data, names no imaging region, or its pixels
    cannot be decoded.
    """
    return cleaned_request(data, size, limits).png


def cleaned_request(
    data: bytes, size: int = CANONICAL_SIZE, limits: ImageLimits | None = None
) -> CleanedRequest:
    """`request_picture`, and the scanner the header names (None when it names none)."""
    if not is_dicom(data):
        raise ValueError(NOT_DICOM)
    with quiet_pydicom():
        ds = _read(data)
        if "PixelData" not in ds:
            raise ValueError(NO_PIXELS)
        check_size(*_geometry(ds), limits or ImageLimits())
        if not us_regions(ds):
            raise ValueError(UNCLEANABLE)
        try:
            png = canonical_picture(ds, size)
        except Exception:  # every decoder raises its own types; all mean the same here
            raise ValueError(UNDECODABLE) from None
        make, model = str(ds.get("Manufacturer", "")), str(ds.get("ManufacturerModelName", ""))
    scanner = Scanner(make, model) if make or model else None
    return CleanedRequest(png, scanner)


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception:
        # The reader's own message may quote what it read.
        raise ValueError(UNREADABLE) from None


def _geometry(ds: Dataset) -> tuple[int, int, int]:
    """Rows, columns and frames as the header declares them: what decoding would allocate."""
    try:
        return int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:
        # A missing or malformed element; its value may be quoted by the error.
        raise ValueError(UNREADABLE) from None
