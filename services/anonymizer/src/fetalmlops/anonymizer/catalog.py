"""The consumer of fetal.labels: each label joins the catalog under its image's pseudonym.

A label names its image by the raw sha256 ingest gave the sender, or by the catalog id. Only
the anonymizer holds the secret that turns one into the other, so it writes the label rows.
The sha256 may be that of a second copy of an instance (re-sent in another transfer syntax or
over another channel), catalogued as a copy of the one image: a label for a copy already known
is written under the image's id. A label may also come before its copy is known (an importer
labels right after uploading): the row waits under the copy's id, and ``image_copies`` joins
it to the image when the copy arrives (``Image.labels``, the trainer's snapshots). A replayed
event updates the annotator's one reading of the image instead of adding a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from fetalmlops.anonymizer import pseudonyms
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import Record, Rejected, read_event
from fetalmlops.common.db import ImageCopy, Label, session_scope
from fetalmlops.common.planes import brain_plane_from_proto, plane_from_proto
from fetalmlops.v1 import labels_pb2

log = logging.getLogger(__name__)


def image_id(secret: bytes, raw_sha256: str) -> str:
    """The catalog id of the image whose raw bytes hash to ``raw_sha256``: 128 bits of a keyed
    HMAC, so two images' ids collide with odds near 2^-64 even at billions of images."""
    return f"img-{pseudonyms.digest(secret, 'img', raw_sha256).hex()[:32]}"


def legacy_image_id(secret: bytes, raw_sha256: str) -> str:
    """The id catalogued before ids were widened: the first 48 bits of the same HMAC
    (collisions likely past ~16 million images)."""
    return image_id(secret, raw_sha256)[: len("img-") + 12]


def known_copy(session: Session, secret: bytes, raw_sha256: str) -> ImageCopy | None:
    """The catalogued copy these raw bytes are, under its id or the legacy one: images and
    labels catalogued before the widening keep resolving."""
    for copy_id in (image_id(secret, raw_sha256), legacy_image_id(secret, raw_sha256)):
        copy = session.get(ImageCopy, copy_id)
        if copy is not None:
            return copy
    return None


def reading(event: labels_pb2.LabelAttached, secret: bytes) -> Label:
    """The label row an event describes; Rejected when it names no image or no plane."""
    reference = event.WhichOneof("image")
    if reference is None:
        raise Rejected("the label names no image")
    plane = plane_from_proto(event.plane)
    if plane is None:
        raise Rejected("the label names no plane this build knows")
    return Label(
        image_id=event.image_id if reference == "image_id" else image_id(secret, event.raw_sha256),
        plane=plane,
        brain_plane=brain_plane_from_proto(event.brain_plane),
        annotator=event.annotator or "unknown",
    )


@dataclass
class Catalog:
    own: AnonymizerSettings
    engine: Engine

    @cached_property
    def secret(self) -> bytes:
        return self.own.policy().secret

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, labels_pb2.LabelAttached):
            raise Rejected(f"expected LabelAttached, got {type(event).__name__}")
        label = reading(event, self.secret)
        with session_scope(self.engine) as session:
            if event.WhichOneof("image") == "raw_sha256":
                copy = known_copy(session, self.secret, event.raw_sha256)
            else:
                copy = session.get(ImageCopy, label.image_id)
            if copy is not None:
                label.image_id = copy.image_id
            same = select(Label).where(
                Label.image_id == label.image_id, Label.annotator == label.annotator
            )
            existing = session.scalars(same).one_or_none()
            if existing is None:
                session.add(label)
            else:
                existing.plane, existing.brain_plane = label.plane, label.brain_plane
        log.info("label catalogued", extra={"image_id": label.image_id})
