"""The raw zone's one way in: validate, store content-addressed, record, announce — once.

Every channel (Kafka, STOW-RS, C-STORE, REST, import) calls ``Intake.receive``. The object key
is the content's sha256, so a replay or a second upload of the same bytes lands on the same
object. The record's ``announced_at`` is set only after ``fetal.images.received`` is
acknowledged: a crash between storing and announcing leads to a second announcement on retry,
never to none, and an image already announced is neither stored nor announced again. When the
bus is unavailable, ``receive`` raises ``BusUnavailable`` within the bus's bound, having
announced nothing (the bus guarantees its refusal is final), so the sender's retry announces the
image exactly once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import Counter
from sqlalchemy import Engine

from fetalmlops.common.bus import Bus, BusUnavailable, publish_event
from fetalmlops.common.db import IngestChannel, IngestRecord, session_scope
from fetalmlops.common.db.columns import utcnow
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore, put_content_addressed
from fetalmlops.ingest.settings import IngestSettings
from fetalmlops.ingest.validation import DICOM, MEDIA_TYPES, Invalid, ValidImage, validate
from fetalmlops.v1 import common_pb2, images_pb2

log = logging.getLogger(__name__)

RAW_PREFIX = "sha256/"
IMAGES = Counter(
    "fetalmlops_ingest_images_total",
    "Images accepted, by channel and outcome.",
    ["channel", "outcome"],
)
REFUSED = Counter(
    "fetalmlops_ingest_refused_total",
    "Images refused, by channel and verdict.",
    ["channel", "verdict"],
)
UNANNOUNCED = Counter(
    "fetalmlops_ingest_unannounced_total",
    "Images left unannounced because the message bus was unavailable (the sender is told to "
    "retry), by channel.",
    ["channel"],
)
PROTO_CHANNEL = {
    IngestChannel.KAFKA: images_pb2.INGEST_CHANNEL_KAFKA,
    IngestChannel.STOW_RS: images_pb2.INGEST_CHANNEL_STOW_RS,
    IngestChannel.C_STORE: images_pb2.INGEST_CHANNEL_C_STORE,
    IngestChannel.REST: images_pb2.INGEST_CHANNEL_REST,
    IngestChannel.IMPORT: images_pb2.INGEST_CHANNEL_IMPORT,
}
# The DICOM channels promise DICOM instances (PS3.4 Annex B, PS3.18 §10.5): anything else sent
# there is refused, not stored under a record without a single UID.
CHANNEL_MEDIA_TYPES = {
    IngestChannel.STOW_RS: frozenset({DICOM}),
    IngestChannel.C_STORE: frozenset({DICOM}),
}


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Provenance:
    """What a sender declares beside a file: its cohort (not PHI) and, for pictures without a
    header, the patient it shows (PHI: kept in the raw zone, never in the event)."""

    cohort: str = ""
    patient_id: str = ""


@dataclass(frozen=True)
class Receipt:
    sha256: str
    outcome: Outcome
    image: ValidImage


@dataclass
class Intake:
    settings: Settings
    limits: IngestSettings
    store: ObjectStore
    bus: Bus
    engine: Engine

    def check(self, data: bytes, media_types: frozenset[str] = MEDIA_TYPES) -> ValidImage:
        """Validation alone, for channels that must vet a whole batch before storing any."""
        return validate(data, self.limits, media_types)

    def receive(
        self, data: bytes, channel: IngestChannel, provenance: Provenance | None = None
    ) -> Receipt:
        try:
            image = self.check(data, CHANNEL_MEDIA_TYPES.get(channel, MEDIA_TYPES))
        except Invalid as exc:
            REFUSED.labels(channel.value, exc.verdict.value).inc()
            raise
        return self.admit(data, image, channel, provenance or Provenance())

    def admit(
        self,
        data: bytes,
        image: ValidImage,
        channel: IngestChannel,
        provenance: Provenance | None = None,
    ) -> Receipt:
        """Store and announce bytes that ``check`` has already accepted."""
        bucket = self.settings.buckets.raw
        info, _ = put_content_addressed(
            self.store, bucket, data, prefix=RAW_PREFIX, content_type=image.media_type
        )
        sha256 = info.key.removeprefix(RAW_PREFIX)
        with session_scope(self.engine) as session:
            record = session.get(IngestRecord, sha256)
            if record is None:
                session.add(
                    IngestRecord(
                        sha256=sha256,
                        raw_key=info.key,
                        media_type=image.media_type,
                        channel=channel,
                        size_bytes=len(data),
                        modality=image.modality,
                        sop_class_uid=image.sop_class_uid,
                        rows=image.rows,
                        columns=image.columns,
                        frames=image.frames,
                    )
                )
            elif record.announced_at is not None:
                log.info("duplicate image", extra={"sha256": sha256, "channel": channel.value})
                IMAGES.labels(channel.value, Outcome.DUPLICATE.value).inc()
                return Receipt(sha256, Outcome.DUPLICATE, image)
        try:
            self._announce(sha256, info.key, len(data), image, channel, provenance or Provenance())
        except BusUnavailable:
            UNANNOUNCED.labels(channel.value).inc()
            log.warning("image not announced: the bus is unavailable", extra={"sha256": sha256})
            raise
        with session_scope(self.engine) as session:
            announced = session.get(IngestRecord, sha256)
            if announced is not None:
                announced.announced_at = utcnow()
        log.info("image received", extra={"sha256": sha256, "channel": channel.value})
        IMAGES.labels(channel.value, Outcome.STORED.value).inc()
        return Receipt(sha256, Outcome.STORED, image)

    def _announce(
        self,
        sha256: str,
        key: str,
        size: int,
        image: ValidImage,
        channel: IngestChannel,
        provenance: Provenance,
    ) -> None:
        event = images_pb2.ImageReceived(
            sha256=sha256,
            raw=common_pb2.ObjectRef(
                bucket=self.settings.buckets.raw,
                key=key,
                sha256=sha256,
                size=size,
                content_type=image.media_type,
            ),
            channel=PROTO_CHANNEL[channel],
            media_type=image.media_type,
            cohort=provenance.cohort,
        )
        if provenance.patient_id:
            # Written before the announcement that names it, under the content's own hash.
            context = json.dumps({"patient_id": provenance.patient_id}).encode()
            info = self.store.put(
                self.settings.buckets.raw,
                f"context/{sha256}.json",
                context,
                content_type="application/json",
            )
            event.context.CopyFrom(
                common_pb2.ObjectRef(
                    bucket=info.bucket,
                    key=info.key,
                    size=info.size,
                    content_type="application/json",
                )
            )
        publish_event(self.bus, self.settings.topics.images_received, sha256, event, "ingest")
