"""Clean Pixel Data for ultrasound: keep what lies inside the imaging regions, blank the rest.

Scanners burn the patient banner into the frame outside the sector; the
SequenceOfUltrasoundRegions (PS3.3 C.8.5.5) says where the image itself is. Everything outside
the union of its regions is set to zero, in every frame, and the result is stored uncompressed.

The anonymizer cleans every study it publishes this way; the inference service cleans a DICOM
request the same way before it looks at a pixel, so a model never sees a banner in either path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from fetalmlops.imaging.quiet import quiet_pydicom

Box = tuple[int, int, int, int]
# Finds burned-in text in a frame: the OCR fallback for frames that name no region.
TextFinder = Callable[[NDArray[np.generic], int], list[Box]]


class NoRegions(ValueError):
    """The image says nothing of where its imaging region is: it cannot be cleaned by regions."""


def us_regions(ds: Dataset) -> list[Box]:
    """(x0, y0, x1, y1) of each region item that gives its full location, inclusive, in pixels."""
    return [
        (
            int(r.RegionLocationMinX0),
            int(r.RegionLocationMinY0),
            int(r.RegionLocationMaxX1),
            int(r.RegionLocationMaxY1),
        )
        for r in ds.get("SequenceOfUltrasoundRegions", [])
        if all(
            k in r
            for k in (
                "RegionLocationMinX0",
                "RegionLocationMinY0",
                "RegionLocationMaxX1",
                "RegionLocationMaxY1",
            )
        )
    ]


def region_mask(rows: int, columns: int, regions: list[Box]) -> NDArray[np.bool_]:
    """True inside any of ``regions`` (inclusive boxes, clipped to the frame)."""
    mask = np.zeros((rows, columns), dtype=bool)
    for x0, y0, x1, y1 in regions:
        mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return mask


def blank_outside(
    pixels: NDArray[np.generic], mask: NDArray[np.bool_], frames: int
) -> NDArray[np.generic]:
    """Pixels zeroed outside ``mask``; shapes (frames,) rows, columns (, samples) all work."""
    cleaned = pixels.copy()
    keep = mask if frames == 1 else mask[None, ...]
    if cleaned.ndim == keep.ndim + 1:  # colour samples last
        keep = keep[..., None]
    return np.where(keep, cleaned, 0).astype(pixels.dtype)


def clean_pixel_data(
    ds: Dataset, fallback: list[Box] | None = None, find_text: TextFinder | None = None
) -> bool:
    """Blank outside the US regions (or, lacking them, a configured mask) in place; lacking
    both, blank the text ``find_text`` finds. True when OCR, not geometry, did the cleaning.

    Raises NoRegions when nothing says what to keep and no text finder is given.
    """
    regions = us_regions(ds) or list(fallback or [])
    if not regions and find_text is None:
        raise NoRegions("no SequenceOfUltrasoundRegions with a location, and no mask for it")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    with quiet_pydicom():
        pixels = ds.pixel_array
    photometric = str(ds.PhotometricInterpretation)
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom decodes YCbCr to RGB
    rows, columns = int(ds.Rows), int(ds.Columns)
    if regions:
        keep = region_mask(rows, columns, regions)
    else:
        assert find_text is not None
        keep = ~region_mask(rows, columns, find_text(pixels, frames))
    cleaned = blank_outside(pixels, keep, frames)
    cleaned = cleaned.astype(cleaned.dtype.newbyteorder("<"))  # a big-endian source decodes as >u2
    # Written back uncompressed and little endian (big endian is retired, PS3.5 A.3).
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(cleaned, photometric, int(ds.BitsStored), generate_instance_uid=False)
    ds.BurnedInAnnotation = "NO"
    return not regions
