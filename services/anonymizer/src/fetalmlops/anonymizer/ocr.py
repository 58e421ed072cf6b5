"""Burned-in text found by OCR: the last resort for frames that name no imaging region.

A frame with a SequenceOfUltrasoundRegions, or a configured mask, is cleaned by geometry:
everything outside the region goes, whatever it says. A frame with neither can only be
searched for text. Tesseract (Debian's `tesseract-ocr`, run as a process: no Python binding to
pin) reads the frame in sparse-text mode, and every word it is reasonably sure of is blanked
with a margin. Text it cannot read survives, so this is opt-in (`FETALMLOPS_ANONYMIZER_OCR`)
and the method written into the file says that OCR, not geometry, cleaned it.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fetalmlops.imaging.regions import Box, TextFinder

TESSERACT = "tesseract"
TIMEOUT_S = 60
METHOD = "burned-in text removed by OCR (no imaging region known)"
MARGIN = 3  # pixels around each word: anti-aliased glyph edges stay legible otherwise


class OcrUnavailable(ValueError):
    """OCR is switched on but the tesseract program is missing."""


@dataclass(frozen=True)
class Word:
    box: Box
    confidence: float
    text: str
    line: tuple[int, int, int]  # tesseract's block, paragraph and line numbers


def require_tesseract() -> str:
    found = shutil.which(TESSERACT)
    if found is None:
        raise OcrUnavailable(
            "FETALMLOPS_ANONYMIZER_OCR is on but `tesseract` is not installed "
            "(Debian: apt-get install tesseract-ocr)"
        )
    return found


def words(frame: NDArray[np.uint8]) -> list[Word]:
    """Every word tesseract reads in a greyscale frame, with its box and confidence (0–100)."""
    png = io.BytesIO()
    Image.fromarray(frame).save(png, "PNG")
    result = subprocess.run(
        [require_tesseract(), "stdin", "stdout", "--psm", "11", "tsv"],
        input=png.getvalue(),
        capture_output=True,
        timeout=TIMEOUT_S,
        check=True,
    )
    rows = csv.DictReader(io.StringIO(result.stdout.decode()), delimiter="\t", quoting=3)
    found = []
    for row in rows:
        text = (row.get("text") or "").strip()
        if not text:
            continue
        left, top = int(row["left"]), int(row["top"])
        box = (left, top, left + int(row["width"]) - 1, top + int(row["height"]) - 1)
        line = (int(row["block_num"]), int(row["par_num"]), int(row["line_num"]))
        found.append(Word(box, float(row["conf"]), text, line))
    return found


def text_boxes(frame: NDArray[np.uint8], min_confidence: float) -> list[Box]:
    """Boxes to blank: each text line, from its first to its last word read with enough
    confidence (at least two letters or digits), so punctuation and short words between them
    go too (a banner's "St. Agnes")."""
    lines: dict[tuple[int, int, int], list[Box]] = {}
    for w in words(frame):
        if w.confidence >= min_confidence and sum(c.isalnum() for c in w.text) >= 2:
            lines.setdefault(w.line, []).append(w.box)
    rows, columns = frame.shape
    return [
        (
            max(min(b[0] for b in boxes) - MARGIN, 0),
            max(min(b[1] for b in boxes) - MARGIN, 0),
            min(max(b[2] for b in boxes) + MARGIN, columns - 1),
            min(max(b[3] for b in boxes) + MARGIN, rows - 1),
        )
        for boxes in lines.values()
    ]


def overlay(pixels: NDArray[np.generic], frames: int) -> NDArray[np.uint8]:
    """One greyscale 8-bit frame holding every frame's brightest pixel: burned-in text is static
    and bright, so one OCR pass over this finds what any frame shows."""
    stack = pixels.astype(np.float64)
    if frames > 1:
        stack = stack.max(axis=0)
    if stack.ndim == 3:  # colour samples last
        stack = stack.max(axis=-1)
    peak = float(stack.max()) if stack.size else 0.0
    scaled = stack * (255.0 / peak) if peak > 255 else stack
    return np.clip(scaled, 0, 255).astype(np.uint8)


def finder(min_confidence: float) -> TextFinder:
    """The text finder `clean_pixel_data` calls for a frame that names no region."""
    require_tesseract()

    def find(pixels: NDArray[np.generic], frames: int) -> list[Box]:
        return text_boxes(overlay(pixels, frames), min_confidence)

    return find
