"""One DICOM file in, its de-identified form out, or a refusal: de-identify, clean, verify."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pydicom
from pydicom.filewriter import dcmwrite

from fetalmlops.anonymizer.deidentify import deidentify
from fetalmlops.anonymizer.pixels import clean_pixel_data
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.verify import verify


@dataclass(frozen=True)
class Anonymized:
    data: bytes  # the de-identified DICOM Part 10 file
    patient_pseudonym: str
    sop_instance_uid: str  # the pseudonymous one


def anonymize_dicom(data: bytes, policy: Policy) -> Anonymized:
    """Raises NoRegions (pixels cannot be cleaned) or Residue (the gate found PHI)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings quote values, which may be PHI
        source = pydicom.dcmread(io.BytesIO(data))
        result = deidentify(source, policy)
        if policy.clean_pixel_data:
            ds = result.dataset
            device = f"{ds.get('Manufacturer', '')}/{ds.get('ManufacturerModelName', '')}"
            clean_pixel_data(ds, policy.mask_for(int(ds.Columns), int(ds.Rows), device))
    buffer = io.BytesIO()
    syntax = result.dataset.file_meta.TransferSyntaxUID
    # Written in the dataset's (possibly new) transfer syntax; cleaned pixels are explicit LE.
    dcmwrite(buffer, result.dataset, enforce_file_format=True, implicit_vr=syntax.is_implicit_VR,
             little_endian=syntax.is_little_endian)  # fmt: skip
    output = buffer.getvalue()
    verify(output, result.phi, policy, result.names)
    return Anonymized(output, result.patient_pseudonym, str(result.dataset.SOPInstanceUID))
