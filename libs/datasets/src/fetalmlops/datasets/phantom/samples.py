"""Single phantom images as bytes, for tests and benchmarks of the services that receive them."""

from __future__ import annotations

import io

from PIL import Image

from fetalmlops.datasets.phantom.dataset import ImageSpec, draw, plan
from fetalmlops.datasets.phantom.dicom import to_dataset, uids


def _spec(seed: int, profile: str) -> ImageSpec:
    return plan(1, seed, (profile,))[0]


def sample_dicom(seed: int = 0, profile: str = "highend-a") -> bytes:
    """A DICOM Part 10 file with PHI in header and banner; a different seed, different bytes."""
    spec = _spec(seed, profile)
    frame = draw(spec, seed, 0.5, banner=True)
    study = uids(seed, spec.patient, spec.visit_index, 1, spec.image_id)
    dataset, _ = to_dataset(
        frame, spec.profile, spec.patient, spec.visit, study, spec.instance_number
    )
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sample_picture(seed: int = 0, fmt: str = "PNG", profile: str = "highend-a") -> bytes:
    """The same kind of frame as PNG or JPEG bytes (no banner)."""
    buffer = io.BytesIO()
    Image.fromarray(draw(_spec(seed, profile), seed, 0.5, banner=False).pixels).save(buffer, fmt)
    return buffer.getvalue()


def plane_pictures(count: int, seed: int = 11) -> list[bytes]:
    """``count`` (at most 8) PNG frames of different planes and sizes, two patients' worth."""
    pictures = []
    for spec in plan(2, seed)[:count]:
        buffer = io.BytesIO()
        Image.fromarray(draw(spec, seed, 0.5, banner=False).pixels).save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures
