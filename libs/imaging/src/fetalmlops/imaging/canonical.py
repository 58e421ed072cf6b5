"""Harmonisation: the canonical, model-ready image every trainer and predictor reads.

Greyscale, cropped to the imaging region, padded to a square and resized, 8-bit PNG. The
pixels inside the region are only resampled: no contrast or speckle processing happens here,
so a model sees what the scanner showed.

The anonymizer publishes this picture for every study, the inference service recomputes it from
a DICOM request and the trainer from a DICOM file on disk, all three with `canonical_picture`,
so a model is served exactly the picture it was trained on (a test feeds one DICOM through the
three and compares the bytes).
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset

from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.imaging.regions import Box, blank_outside, region_mask, us_regions

CANONICAL_SIZE = 256


def greyscale(pixels: NDArray[np.generic]) -> NDArray[np.uint8]:
    """First frame, luminance (ITU-R BT.601) when coloured, scaled to 8 bits."""
    frame = pixels.astype(np.float64)
    if frame.ndim == 3 and frame.shape[-1] == 3:
        frame = frame @ np.array([0.299, 0.587, 0.114])
    peak = float(frame.max()) if frame.size else 0.0
    if peak > 255:
        frame = frame * (255.0 / peak)
    return np.clip(frame, 0, 255).astype(np.uint8)


def canonical(pixels: NDArray[np.generic], region: Box | None, size: int = CANONICAL_SIZE) -> bytes:
    """One frame (rows, columns (, 3)) cropped to ``region``, centred on black in a square,
    resized to ``size`` and encoded as an 8-bit greyscale PNG."""
    grey = greyscale(pixels)
    if region is not None:
        x0, y0, x1, y1 = region
        grey = grey[y0 : y1 + 1, x0 : x1 + 1]
    side = max(grey.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
    square[top : top + grey.shape[0], left : left + grey.shape[1]] = grey
    buffer = io.BytesIO()
    Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


def union(regions: list[Box]) -> Box | None:
    """The smallest box holding every one of ``regions``; None for none."""
    if not regions:
        return None
    return (
        min(r[0] for r in regions),
        min(r[1] for r in regions),
        max(r[2] for r in regions),
        max(r[3] for r in regions),
    )


def canonical_picture(
    ds: Dataset, size: int = CANONICAL_SIZE, regions: list[Box] | None = None
) -> bytes:
    """The canonical PNG of a DICOM: its first frame blanked outside ``regions`` (by default
    its SequenceOfUltrasoundRegions), cropped to their union and harmonised by `canonical`.

    With no region at all the whole frame is kept: whether such a file may be used at all is
    the caller's to decide (the anonymizer cleans it by a mask or OCR first, inference
    refuses it). Blanking an already cleaned file changes nothing, so the anonymizer's
    de-identified output and the scanner's original give the same bytes.
    """
    boxes = us_regions(ds) if regions is None else regions
    with quiet_pydicom():
        pixels: NDArray[np.generic] = ds.pixel_array
    first = pixels if int(ds.get("NumberOfFrames", 1) or 1) == 1 else pixels[0]
    if boxes:
        first = blank_outside(first, region_mask(int(ds.Rows), int(ds.Columns), boxes), 1)
    return canonical(first, union(boxes), size)
