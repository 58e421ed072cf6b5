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

from fetalmlops.imaging.limits import over_limits
from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.ingest.settings import IngestSettings

DICOM, PNG, JPEG = "application/dicom", "image/png", "image/jpeg"
MEDIA_TYPES = frozenset({DICOM, PNG, JPEG})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# The transfer syntaxes taken on every channel (and the ones the C-STORE SCP negotiates):
# explicit/implicit little endian plus the compressed syntaxes ultrasound devices send, each
# decoded for the pixel check below.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


class Verdict(StrEnum):
    """Why an input was refused, one cause each; ``statuses`` maps them onto every protocol."""

    UNSUPPORTED = "unsupported"  # not DICOM, PNG or JPEG (not DICOM, where only DICOM is taken)
    TOO_LARGE = "too_large"  # bytes, pixels, sides or frames over the limits
    SOP_CLASS_NOT_SUPPORTED = "sop_class_not_supported"  # SOP class outside the allow-list
    # The data set is not what its SOP class says it is (PS3.4 B.2.3 "data set does not match
    # SOP class"): a modality outside the allow-list, or a SOP Class UID other than the one it
    # was sent as (the file meta's, which a C-STORE SCP takes from the presentation context).
    DOES_NOT_MATCH_SOP_CLASS = "does_not_match_sop_class"
    CORRUPT = "corrupt"  # parseable header, undecodable content
    TRANSFER_SYNTAX_NOT_SUPPORTED = "transfer_syntax_not_supported"  # not in TRANSFER_SYNTAXES
    OTHER_STUDY = "other_study"  # STOW-RS to one study, an instance of another


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


def validate(
    data: bytes, limits: IngestSettings, media_types: frozenset[str] = MEDIA_TYPES
) -> ValidImage:
    """The image ``data`` holds, if it is one of ``media_types`` within ``limits``."""
    if len(data) > limits.max_bytes:
        raise Invalid(
            Verdict.TOO_LARGE, f"{len(data)} bytes exceed the limit of {limits.max_bytes}"
        )
    media_type = sniff(data)
    if media_type not in media_types:
        # A PNG where a DICOM instance was promised would be stored without a single UID.
        raise Invalid(Verdict.UNSUPPORTED, f"not one of {', '.join(sorted(media_types))}")
    return (
        validate_dicom(data, limits)
        if media_type == DICOM
        else validate_picture(data, media_type, limits)
    )


def _check_size(rows: int, columns: int, frames: int, limits: IngestSettings) -> None:
    if min(rows, columns, frames) < 1:
        raise Invalid(Verdict.CORRUPT, "image has no pixels")
    reason = over_limits(
        rows,
        columns,
        frames,
        max_side=limits.max_side,
        max_frames=limits.max_frames,
        max_pixels=limits.max_pixels,
    )
    if reason is not None:
        raise Invalid(Verdict.TOO_LARGE, reason)


def validate_dicom(data: bytes, limits: IngestSettings) -> ValidImage:
    try:
        with quiet_pydicom():  # pydicom's warnings and logs quote values, which may be PHI
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=False)
            modality, sop_class = str(ds.get("Modality", "")), str(ds.get("SOPClassUID", ""))
            sent_as = str(ds.file_meta.get("MediaStorageSOPClassUID", sop_class))
            syntax = str(ds.file_meta.get("TransferSyntaxUID", TRANSFER_SYNTAXES[0]))
            rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
            frames = int(ds.get("NumberOfFrames", 1) or 1)
    except Exception as exc:  # malformed files raise anything from struct.error to KeyError
        raise Invalid(
            Verdict.CORRUPT, f"not a parseable DICOM file ({type(exc).__name__})"
        ) from None
    if syntax not in TRANSFER_SYNTAXES:
        raise Invalid(Verdict.TRANSFER_SYNTAX_NOT_SUPPORTED, "the transfer syntax is not accepted")
    if sent_as != sop_class:
        raise Invalid(
            Verdict.DOES_NOT_MATCH_SOP_CLASS,
            "the data set's SOP Class UID differs from the one it was sent as",
        )
    if sop_class not in limits.sop_classes:
        raise Invalid(Verdict.SOP_CLASS_NOT_SUPPORTED, "the SOP class is not accepted")
    if modality not in limits.modalities:
        raise Invalid(
            Verdict.DOES_NOT_MATCH_SOP_CLASS, "the modality is not accepted for this SOP class"
        )
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
