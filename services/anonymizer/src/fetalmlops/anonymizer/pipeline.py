"""One file in, its de-identified form out, or a refusal.

DICOM: de-identify the header, clean the pixels, verify. PNG/JPEG: re-encoded from the pixels
alone (every metadata chunk and EXIF block is dropped), cleaned by a mask or by OCR.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.filewriter import dcmwrite

from fetalmlops.anonymizer import ocr
from fetalmlops.anonymizer.deidentify import deidentify
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.verify import verify
from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.imaging.regions import (
    Box,
    NoRegions,
    blank_outside,
    clean_pixel_data,
    region_mask,
)


@dataclass(frozen=True)
class Anonymized:
    data: bytes  # the de-identified DICOM Part 10 file
    patient_pseudonym: str
    sop_instance_uid: str  # the pseudonymous one


def anonymize_dicom(data: bytes, policy: Policy) -> Anonymized:
    """Raises NoRegions (pixels cannot be cleaned) or Residue (the gate found PHI)."""
    with quiet_pydicom():  # pydicom's warnings and logs quote values, which may be PHI
        source = pydicom.dcmread(io.BytesIO(data))
        result = deidentify(source, policy)
        if policy.clean_pixel_data:
            ds = result.dataset
            device = f"{ds.get('Manufacturer', '')}/{ds.get('ManufacturerModelName', '')}"
            mask = policy.mask_for(int(ds.Columns), int(ds.Rows), device)
            find_text = ocr.finder(policy.ocr_min_confidence) if policy.ocr else None
            if clean_pixel_data(ds, mask, find_text):
                ds.DeidentificationMethod = f"{ds.DeidentificationMethod}; {ocr.METHOD}"
    buffer = io.BytesIO()
    syntax = result.dataset.file_meta.TransferSyntaxUID
    # Written in the dataset's (possibly new) transfer syntax; cleaned pixels are explicit LE.
    dcmwrite(buffer, result.dataset, enforce_file_format=True, implicit_vr=syntax.is_implicit_VR,
             little_endian=syntax.is_little_endian)  # fmt: skip
    output = buffer.getvalue()
    verify(output, result.phi, policy, result.names)
    return Anonymized(output, result.patient_pseudonym, str(result.dataset.SOPInstanceUID))


@dataclass(frozen=True)
class CleanPicture:
    png: bytes
    pixels: NDArray[np.uint8]  # greyscale, as written
    mask: list[Box]  # the imaging region kept, when a mask said where it is


def anonymize_picture(
    data: bytes, policy: Policy, deidentified_at_source: bool = False
) -> CleanPicture:
    """Raises NoRegions when no mask fits, OCR is off and the source does not vouch for it."""
    with Image.open(io.BytesIO(data)) as picture:
        pixels = np.asarray(picture.convert("L"))
    rows, columns = pixels.shape
    mask = policy.mask_for(columns, rows)
    if mask:
        pixels = blank_outside(pixels, region_mask(rows, columns, mask), 1)
    elif policy.ocr:
        boxes = ocr.finder(policy.ocr_min_confidence)(pixels, 1)
        pixels = blank_outside(pixels, ~region_mask(rows, columns, boxes), 1)
    elif not deidentified_at_source:
        raise NoRegions("a PNG/JPEG names no imaging region, no mask fits its size, OCR is off")
    clean = io.BytesIO()
    Image.fromarray(pixels).save(clean, "PNG")
    return CleanPicture(clean.getvalue(), pixels, mask)
