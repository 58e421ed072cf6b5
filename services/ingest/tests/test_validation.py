"""The checks every channel shares, on phantom files and on hand-broken ones."""

from __future__ import annotations

import io
import struct
import zlib

import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.ingest.settings import IngestSettings
from fetalmlops.ingest.validation import DICOM, JPEG, PNG, Invalid, Verdict, validate

LIMITS = IngestSettings()


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def phantom() -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(sample_dicom(1)))


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with a tiny IDAT: the shape of a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(sample_dicom(1), DICOM), (sample_picture(1, "PNG"), PNG), (sample_picture(1, "JPEG"), JPEG)],
)
def test_phantom_images_are_accepted(data: bytes, media_type: str) -> None:
    image = validate(data, LIMITS)
    assert (image.media_type, image.rows, image.columns, image.frames) == (media_type, 600, 800, 1)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_dicom_decodes(syntax: str) -> None:
    ds = phantom()
    ds.compress(syntax)
    assert validate(dicom_bytes(ds), LIMITS).media_type == DICOM


def test_jpeg_baseline_dicom_decodes_and_a_truncated_stream_does_not() -> None:
    ds = phantom()
    jpeg = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(jpeg, "JPEG", quality=90)
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    assert validate(dicom_bytes(ds), LIMITS).rows == 600
    ds.PixelData = encapsulate([jpeg.getvalue()[:300]])
    with pytest.raises(Invalid) as caught:
        validate(dicom_bytes(ds), LIMITS)
    assert caught.value.verdict is Verdict.CORRUPT


def refused(data: bytes, limits: IngestSettings = LIMITS) -> Invalid:
    with pytest.raises(Invalid) as caught:
        validate(data, limits)
    return caught.value


def test_a_wrong_modality_and_a_wrong_sop_class_are_two_causes() -> None:
    ds = phantom()
    ds.Modality = "CT"
    assert refused(dicom_bytes(ds)).verdict is Verdict.DOES_NOT_MATCH_SOP_CLASS
    ds = phantom()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # SC
    assert refused(dicom_bytes(ds)).verdict is Verdict.SOP_CLASS_NOT_SUPPORTED


def test_a_data_set_unlike_the_sop_class_it_was_sent_as_does_not_match() -> None:
    """PS3.10: the file meta's SOP class is the data set's own; a C-STORE SCP writes the
    presentation context's there, so a CT data set sent as ultrasound is caught here."""
    ds = phantom()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage, meta still ultrasound
    buffer = io.BytesIO()
    ds.save_as(buffer)  # as written, without pydicom bringing the meta in line
    assert refused(buffer.getvalue()).verdict is Verdict.DOES_NOT_MATCH_SOP_CLASS


def test_a_channel_may_take_dicom_only() -> None:
    only_dicom = frozenset({DICOM})
    assert validate(sample_dicom(1), LIMITS, only_dicom).media_type == DICOM
    with pytest.raises(Invalid) as caught:
        validate(sample_picture(1, "PNG"), LIMITS, only_dicom)
    assert caught.value.verdict is Verdict.UNSUPPORTED


def test_missing_or_wrong_pixel_data_is_corrupt() -> None:
    ds = phantom()
    del ds.PixelData
    assert refused(dicom_bytes(ds)).reason == "no pixel data"
    ds = phantom()
    ds.PixelData = ds.PixelData[:1000]
    assert refused(dicom_bytes(ds)).verdict is Verdict.CORRUPT


def test_truncated_files_and_non_images_are_refused() -> None:
    assert refused(sample_dicom(1)[:2000]).verdict is Verdict.CORRUPT
    assert refused(sample_picture(1, "PNG")[:5000]).verdict is Verdict.CORRUPT
    assert refused(b"%PDF-1.7 not an image").verdict is Verdict.UNSUPPORTED
    assert refused(b"").verdict is Verdict.UNSUPPORTED


def test_limits_refuse_before_decoding() -> None:
    bomb = refused(png_header(60_000, 60_000))
    assert bomb.verdict is Verdict.TOO_LARGE
    ds = phantom()
    ds.Rows = 30_000
    assert refused(dicom_bytes(ds)).verdict is Verdict.TOO_LARGE
    small = IngestSettings(max_bytes=1000)
    assert refused(sample_picture(1, "PNG"), small).verdict is Verdict.TOO_LARGE


def test_reasons_never_quote_the_file() -> None:
    ds = phantom()
    ds.Modality = "MR"
    ds.PatientName = "SECRET^PATIENT"
    assert "SECRET" not in refused(dicom_bytes(ds)).reason
    ds.Modality = "CANARY"  # any header value, even one that is not PHI by its kind
    assert "CANARY" not in refused(dicom_bytes(ds)).reason
    ds = phantom()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6.7.8.9"
    assert "1.2.3.4.5.6.7.8.9" not in refused(dicom_bytes(ds)).reason


def test_a_transfer_syntax_outside_the_table_is_refused() -> None:
    ds = phantom()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # readable, not in the table
    assert refused(dicom_bytes(ds)).verdict is Verdict.TRANSFER_SYNTAX_NOT_SUPPORTED
