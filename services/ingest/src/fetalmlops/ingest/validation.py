"""What every channel checks before anything is stored: one pure function, one error type.

Order matters: cheap checks on the header come before any decoding, so a hostile file (a
decompression bomb, absurd dimensions) is refused before it costs memory. Reasons never quote
values from the file, since those may be PHI.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pydicom
from PIL import Image

from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.ingest.settings import IngestSettings

DICOM, PNG, JPEG = "application/dicom", "image/png", "image/jpeg"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


class Verdict(StrEnum):
    """Why an input was refused; each channel maps these onto its own status codes."""

    UNSUPPORTED = "unsupported"  # not DICOM, PNG or JPEG
    TOO_LARGE = "too_large"  # bytes, pixels, sides or frames over the limits
    NOT_ALLOWED = "not_allowed"  # modality or SOP class outside the allow-list
    CORRUPT = "corrupt"  # parseable header, undecodable content


class Invalid(ValueError):
    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


@dataclass(frozen=True)
class ValidImage:
    media_type: str
    rows: int
    columns: int
    frames: int
    modality: str | None = None
    sop_class_uid: str | None = None


def sniff(data: bytes) -> str:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return DICOM
    if data.startswith(PNG_SIGNATURE):
        return PNG
    if data.startswith(JPEG_SIGNATURE):
        return JPEG
    raise Invalid(Verdict.UNSUPPORTED, "not a DICOM Part 10 file, PNG or JPEG")


def validate(data: bytes, limits: IngestSettings) -> ValidImage:
    if len(data) > limits.max_bytes:
        raise Invalid(
            Verdict.TOO_LARGE, f"{len(data)} bytes exceed the limit of {limits.max_bytes}"
        )
    media_type = sniff(data)
    return (
        validate_dicom(data, limits)
        if media_type == DICOM
        else validate_picture(data, media_type, limits)
    )


def _check_size(rows: int, columns: int, frames: int, limits: IngestSettings) -> None:
    if min(rows, columns, frames) < 1:
        raise Invalid(Verdict.CORRUPT, "image has no pixels")
    if max(rows, columns) > limits.max_side or frames > limits.max_frames:
        raise Invalid(Verdict.TOO_LARGE, f"{frames} frame(s) of {columns}x{rows} exceed the limits")
    if rows * columns * frames > limits.max_pixels:
        raise Invalid(
            Verdict.TOO_LARGE, f"{rows * columns * frames} pixels exceed {limits.max_pixels}"
        )


def validate_dicom(data: bytes, limits: IngestSettings) -> ValidImage:
    try:
        with quiet_pydicom():  # pydicom's warnings and logs quote values, which may be PHI
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=False)
            modality, sop_class = str(ds.get("Modality", "")), str(ds.get("SOPClassUID", ""))
            rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
            frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # malformed files raise anything from struct.error to KeyError
        raise Invalid(
            Verdict.CORRUPT, f"not a parseable DICOM file ({type(exc).__name__})"
        ) from None
    if modality not in limits.modalities:
        raise Invalid(Verdict.NOT_ALLOWED, f"modality {modality or 'missing'} is not accepted")
    if sop_class not in limits.sop_classes:
        raise Invalid(Verdict.NOT_ALLOWED, f"SOP class {sop_class or 'missing'} is not accepted")
    if "PixelData" not in ds:
        raise Invalid(Verdict.CORRUPT, "no pixel data")
    _check_size(rows, columns, frames, limits)
    try:
        with quiet_pydicom():  # inconsistencies surface as the shape check below
            pixels = ds.pixel_array  # JPEG baseline, JPEG 2000 and RLE decode through pylibjpeg
    except Exception as exc:  # every decoder raises its own types; all mean the same here
        raise Invalid(
            Verdict.CORRUPT, f"pixel data cannot be decoded ({type(exc).__name__})"
        ) from None
    expected = (frames, rows, columns) if frames > 1 else (rows, columns)
    if tuple(pixels.shape[: len(expected)]) != expected:
        raise Invalid(Verdict.CORRUPT, "decoded pixels do not match Rows, Columns and frames")
    return ValidImage(DICOM, rows, columns, frames, modality, sop_class)


def validate_picture(data: bytes, media_type: str, limits: IngestSettings) -> ValidImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                columns, rows = image.size
                # The header's size is known before decoding: refuse bombs before they expand.
                _check_size(rows, columns, 1, limits)
                image.load()
                np.asarray(image)
    except Invalid:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Invalid(Verdict.TOO_LARGE, "image would decompress past the pixel limit") from None
    except Exception as exc:  # Pillow raises many types for truncated or corrupt input
        raise Invalid(Verdict.CORRUPT, f"image cannot be decoded ({type(exc).__name__})") from None
    return ValidImage(media_type, rows, columns, 1)
