"""The pixel, frame and image-count limits, read from headers before anything is decoded."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.archive import Archive, open_picture, open_version
from fetalmlops.inference.limits import ImageLimits, check_count, check_size
from fetalmlops.inference.refusals import TooLarge

LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def archive(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return open_version(layout.root, tmp_path_factory.mktemp("cache"))


def png_header(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height`` (8-bit greyscale) and whose only IDAT
    holds ``idat``: what a header check reads, and what decoding would then inflate."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_ingests_defaults_and_refusals() -> None:
    check_size(4882, 8192, 1, LIMITS)  # 40.0 M pixels, a side of 8192: accepted
    for rows, columns, frames, reason in [
        (8193, 17, 1, "over the limit of 8192 pixels a side"),
        (123, 117, 1001, "over the limit of 1000 frames"),
        (6401, 6403, 1, "over the limit of 40000000 pixels"),
        (641, 481, 131, "over the limit of 40000000 pixels"),  # all frames together
    ]:
        with pytest.raises(TooLarge, match=reason) as refused:
            check_size(rows, columns, frames, LIMITS)
        declared = [n for n in (rows, columns, frames, rows * columns * frames) if n > 1]
        assert not [n for n in declared if str(n) in refused.value.reason]  # not repeated
        assert refused.value.status == 413
    with pytest.raises(ValueError, match="declares no pixels"):
        check_size(0, 10, 1, LIMITS)
    check_count(64, LIMITS)
    with pytest.raises(TooLarge, match="more than 64 images"):
        check_count(65, LIMITS)


def test_a_bomb_is_refused_from_its_header_before_it_is_inflated(archive: Archive) -> None:
    # 9000 x 9000 black pixels compress to about 78 KB and decode to 81 MB.
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(TooLarge, match="over the limit of 8192 pixels a side"):
        archive.decode(buffer.getvalue())
    # The same header over pixel data that is not even deflate: refused as too large, so
    # nothing tried to decode it.
    with pytest.raises(TooLarge, match="over the limit of 40000000 pixels"):
        archive.decode(png_header(8000, 8000, b"not deflate data"))
    # Smaller limits are the settings' own.
    small = ImageLimits(max_pixels=10_000)
    with pytest.raises(TooLarge, match="over the limit of 10000 pixels"):
        archive.decode(png_header(200, 200, b"not deflate data"), small)


def test_only_png_and_jpeg_pictures_are_opened(archive: Archive, tmp_path: Path) -> None:
    for kind in ("GIF", "BMP", "TIFF"):
        buffer = io.BytesIO()
        Image.new("L", (32, 32), 128).save(buffer, kind)
        with pytest.raises(ValueError, match="not a PNG or JPEG image") as refused:
            archive.decode(buffer.getvalue())
        assert not isinstance(refused.value, TooLarge)
    buffer = io.BytesIO()
    Image.new("L", (32, 32), 128).save(buffer, "JPEG")
    assert archive.decode(buffer.getvalue()).tensor.ndim == 3


def test_a_colour_picture_is_kept_only_as_its_luminance() -> None:
    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 256, (48, 64, 4), dtype=np.uint8), "RGBA")
    buffer = io.BytesIO()
    rgba.save(buffer, "PNG")
    with open_picture(buffer.getvalue(), LIMITS) as picture:
        assert picture.mode == "L"
        assert picture.size == (64, 48)
        assert picture.tobytes() == rgba.convert("L").tobytes()
