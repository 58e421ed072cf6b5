"""Clean Pixel Data by the SequenceOfUltrasoundRegions, on small files built here by hand."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, UltrasoundImageStorage

from fetalmlops.imaging.regions import (
    Box,
    NoRegions,
    blank_outside,
    clean_pixel_data,
    region_mask,
    us_regions,
)

SECTOR: Box = (2, 3, 7, 8)  # x0, y0, x1, y1, inclusive


def region(box: Box) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    (
        item.RegionLocationMinX0,
        item.RegionLocationMinY0,
        item.RegionLocationMaxX1,
        item.RegionLocationMaxY1,
    ) = box
    return item


def study(
    pixels: np.ndarray,  # type: ignore[type-arg]
    regions: list[Box],
    photometric: str = "MONOCHROME2",
    syntax: pydicom.uid.UID = ExplicitVRLittleEndian,
) -> Dataset:
    """An ultrasound image with ``pixels`` (frames,) rows, columns (, 3) and these regions."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, "1.2.3.4"
    ds.BurnedInAnnotation = "YES"
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence([region(box) for box in regions])
    ds.set_pixel_data(pixels, photometric, pixels.dtype.itemsize * 8)
    if syntax != ExplicitVRLittleEndian:  # set_pixel_data writes little endian only
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
    return ds


def written(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def frame(rows: int = 12, columns: int = 10, dtype: type = np.uint8) -> np.ndarray:  # type: ignore[type-arg]
    return np.arange(1, rows * columns + 1, dtype=dtype).reshape(rows, columns)


def test_each_fully_located_region_is_read_and_a_partial_one_ignored() -> None:
    partial = region((0, 0, 5, 5))
    del partial.RegionLocationMaxY1
    ds = Dataset()
    ds.SequenceOfUltrasoundRegions = Sequence([region(SECTOR), partial, region((0, 0, 1, 1))])

    assert us_regions(ds) == [SECTOR, (0, 0, 1, 1)]
    assert us_regions(Dataset()) == []


def test_the_mask_is_inclusive_and_clipped_to_the_frame() -> None:
    mask = region_mask(4, 5, [(1, 1, 2, 2), (-3, 3, 0, 9)])

    assert mask.tolist() == [
        [False, False, False, False, False],
        [False, True, True, False, False],
        [False, True, True, False, False],
        [True, False, False, False, False],
    ]


@pytest.mark.parametrize(
    ("shape", "frames"), [((6, 5), 1), ((3, 6, 5), 3), ((6, 5, 3), 1), ((3, 6, 5, 3), 3)]
)
def test_blank_outside_works_for_frames_and_colour_samples(
    shape: tuple[int, ...], frames: int
) -> None:
    pixels = np.full(shape, 200, dtype=np.uint16)
    mask = region_mask(6, 5, [(1, 2, 3, 4)])

    cleaned = blank_outside(pixels, mask, frames)

    assert cleaned.dtype == np.uint16 and cleaned.shape == shape
    rows_first = cleaned if frames == 1 else np.moveaxis(cleaned, 0, -1)
    assert (rows_first[mask] == 200).all() and not rows_first[~mask].any()
    assert (pixels == 200).all(), "the source array is left as it was"


def test_outside_the_regions_is_blanked_inside_kept_and_written_uncompressed() -> None:
    pixels = frame()
    ds = study(pixels, [SECTOR])

    assert clean_pixel_data(ds) is False  # geometry, not OCR, cleaned it

    out = written(ds)
    keep = region_mask(12, 10, [SECTOR])
    assert np.array_equal(out.pixel_array[keep], pixels[keep])
    assert not out.pixel_array[~keep].any()
    assert out.BurnedInAnnotation == "NO"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_every_frame_of_a_cine_and_every_sample_of_colour_is_cleaned() -> None:
    cine = np.stack([frame(), frame() + 100])
    colour = np.stack([frame()] * 3, axis=-1)
    keep = region_mask(12, 10, [SECTOR])
    for pixels, photometric in ((cine, "MONOCHROME2"), (colour, "RGB")):
        ds = study(pixels, [SECTOR], photometric)
        clean_pixel_data(ds)
        cleaned = written(ds).pixel_array
        assert cleaned.shape == pixels.shape
        if photometric == "RGB":
            assert np.array_equal(cleaned[keep], pixels[keep]) and not cleaned[~keep].any()
        else:
            for one, source in zip(cleaned, pixels, strict=True):
                assert np.array_equal(one[keep], source[keep]) and not one[~keep].any()


def test_a_big_endian_source_comes_out_little_endian_with_the_same_values() -> None:
    pixels = frame(dtype=np.uint16) * 300
    ds = study(pixels, [SECTOR], syntax=ExplicitVRBigEndian)
    assert np.array_equal(written(ds).pixel_array, pixels), "the source decodes as written"

    clean_pixel_data(ds)

    out = written(ds)
    keep = region_mask(12, 10, [SECTOR])
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(out.pixel_array[keep], pixels[keep])


def test_without_regions_a_mask_cleans_and_without_either_it_is_refused() -> None:
    pixels = frame()
    with pytest.raises(NoRegions, match="no SequenceOfUltrasoundRegions"):
        clean_pixel_data(study(pixels, []))

    ds = study(pixels, [])
    assert clean_pixel_data(ds, fallback=[SECTOR]) is False
    keep = region_mask(12, 10, [SECTOR])
    assert not written(ds).pixel_array[~keep].any()


def test_the_regions_win_over_a_mask() -> None:
    ds = study(frame(), [SECTOR])
    clean_pixel_data(ds, fallback=[(0, 0, 9, 11)])
    assert not written(ds).pixel_array[~region_mask(12, 10, [SECTOR])].any()


def test_without_regions_or_mask_the_text_a_finder_finds_is_blanked() -> None:
    pixels = frame()
    banner: Box = (0, 0, 9, 1)
    calls: list[int] = []

    def find_text(found_in: np.ndarray, frames: int) -> list[Box]:  # type: ignore[type-arg]
        assert np.array_equal(found_in, pixels)
        calls.append(frames)
        return [banner]

    ds = study(pixels, [])
    assert clean_pixel_data(ds, find_text=find_text) is True  # OCR did the cleaning

    out = written(ds).pixel_array
    text = region_mask(12, 10, [banner])
    assert calls == [1]
    assert not out[text].any() and np.array_equal(out[~text], pixels[~text])


def test_a_ycbcr_source_is_written_as_the_rgb_pydicom_decoded() -> None:
    ycbcr = np.stack([frame(), np.full((12, 10), 100), np.full((12, 10), 150)], axis=-1)
    ds = study(ycbcr.astype(np.uint8), [SECTOR], "YBR_FULL")
    rgb = written(ds).pixel_array  # pydicom converts YBR_FULL to RGB when decoding

    clean_pixel_data(ds)

    out = written(ds)
    keep = region_mask(12, 10, [SECTOR])
    assert out.PhotometricInterpretation == "RGB"
    assert np.array_equal(out.pixel_array[keep], rgb[keep]) and not out.pixel_array[~keep].any()
