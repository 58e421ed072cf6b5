"""One catalog image per source instance, whatever its transfer syntax or channel.

A PACS re-sends an instance (implicit VR after explicit, STOW-RS after C-STORE): the raw bytes
differ, so do their sha256s, yet it is the same instance. What recognises it is the SOP
Instance UID — here the de-identified one, a keyed HMAC pseudonym of the source's, so no table
learns the original. A PNG or JPEG names no instance: its de-identified bytes are all there is
to go by. The first copy catalogued gives the image its id; every later copy maps to it.

The announcement of an image is a function of its catalog row and stored objects alone, with
an event id derived from the image id: a replay that has to publish it again publishes the very
same event, which consumers recognise (DESIGN.md §2).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from fetalmlops.common.store import ObjectInfo
from fetalmlops.v1 import common_pb2, images_pb2

# uuid5 namespace of fetal.images.anonymized event ids (any fixed UUID will do; this one is
# uuid5(NAMESPACE_URL, "fetalmlops:images.anonymized")).
ANNOUNCEMENTS = uuid.uuid5(uuid.NAMESPACE_URL, "fetalmlops:images.anonymized")


@dataclass(frozen=True)
class Instance:
    """What makes two de-identified images the same image."""

    sop_instance_uid: str | None  # the pseudonymous one; None for a picture
    sha256: str  # of the de-identified object


@dataclass(frozen=True)
class Catalogued:
    image_id: str
    instance: Instance


def same_image(candidate: Instance, catalogued: Iterable[Catalogued]) -> str | None:
    """The id of the catalogued image ``candidate`` is a copy of, or None for a new image.

    The same instance UID is the same instance, whatever the bytes (another transfer syntax
    decodes to the same pixels, yet a file meta or an encoding may differ); the same
    de-identified bytes are the same image, whatever the raw copy held (a picture re-sent
    with other metadata chunks, which de-identification drops).
    """
    for image in catalogued:
        uid = candidate.sop_instance_uid
        if uid is not None and image.instance.sop_instance_uid == uid:
            return image.image_id
    for image in catalogued:
        if image.instance.sha256 == candidate.sha256:
            return image.image_id
    return None


def event_id(image_id: str) -> str:
    """The one event id of an image's announcement, however often it must be published."""
    return str(uuid.uuid5(ANNOUNCEMENTS, image_id))


@dataclass(frozen=True)
class Facts:
    """The catalog row's facts an announcement carries."""

    image_id: str
    patient_pseudonym: str
    manufacturer: str
    model: str
    rows: int
    columns: int
    spacing_mm: float
    cohort: str
    catalogued_at: datetime


def announcement(
    facts: Facts, dicom: ObjectInfo, canonical: ObjectInfo
) -> images_pb2.ImageAnonymized:
    event = images_pb2.ImageAnonymized(
        image_id=facts.image_id,
        patient_pseudonym=facts.patient_pseudonym,
        dicom=_ref(dicom),
        canonical=_ref(canonical),
        device=images_pb2.Device(manufacturer=facts.manufacturer, model=facts.model),
        geometry=images_pb2.Geometry(
            rows=facts.rows, columns=facts.columns, pixel_spacing_mm=facts.spacing_mm
        ),
        cohort=facts.cohort,
    )
    event.meta.event_id = event_id(facts.image_id)
    # When the image was catalogued, not when this copy of the event left: the same each time.
    event.meta.occurred_at.FromDatetime(facts.catalogued_at)
    return event


def _ref(info: ObjectInfo) -> common_pb2.ObjectRef:
    return common_pb2.ObjectRef(
        bucket=info.bucket,
        key=info.key,
        sha256=info.sha256 or "",
        size=info.size,
        content_type=info.content_type,
    )
