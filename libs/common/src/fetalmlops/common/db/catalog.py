"""The catalog's read interface: all another service may know of the anonymizer's tables.

The anonymizer owns `images`, `image_copies` and `labels` (`OWNERS`): it alone holds the
secret that joins a label, given by the raw bytes' sha256, to its image, so it alone writes
them. The trainer reads the labelled catalog only through `labelled_images`; the anonymizer may
reshape its tables as long as this answer holds, and the tests of both pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from fetalmlops.common.db.models import Image, ImageCopy, Label
from fetalmlops.common.db.session import session_scope
from fetalmlops.common.planes import Plane


@dataclass(frozen=True)
class LabelledImage:
    """A catalogued image with its canonical picture and at least one reading."""

    image_id: str
    readings: tuple[Plane, ...]  # each annotator's latest, in the order they were first given
    canonical_key: str  # in the anonymized bucket
    patient: str  # the patient's pseudonym; "" when unknown
    cohort: str
    device: str  # "manufacturer/model", as far as known
    created_at: datetime


def labelled_images(engine: Engine) -> list[LabelledImage]:
    """Every catalogued image with a canonical picture and a label. A label may name any raw
    copy of an image (a second copy of an instance is no image of its own), and an annotator
    who labelled two copies of one image counts once, by the reading written last."""
    image_id = func.coalesce(ImageCopy.image_id, Label.image_id)
    labels = (
        select(image_id, Label.annotator, Label.plane)
        .outerjoin(ImageCopy, ImageCopy.copy_id == Label.image_id)
        .order_by(Label.id)
    )
    with session_scope(engine) as session:
        latest: dict[tuple[str, str], Plane] = {}
        for image, annotator, plane in session.execute(labels):
            latest[(image, annotator)] = plane
        readings: dict[str, list[Plane]] = {}
        for (image, _), reading in latest.items():
            readings.setdefault(image, []).append(reading)
        images = session.scalars(select(Image).where(Image.id.in_(readings))).all()
        return [
            LabelledImage(
                image_id=image.id,
                readings=tuple(readings[image.id]),
                canonical_key=image.canonical_key,
                patient=image.patient_pseudonym or "",
                cohort=image.cohort or "",
                device="/".join(filter(None, (image.device_manufacturer, image.device_model))),
                created_at=image.created_at,
            )
            for image in images
            if image.canonical_key
        ]
