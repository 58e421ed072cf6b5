"""The Kafka channel: studies pushed by PACS integrations on ``fetal.studies.incoming``.

A message carries a study whose instances are inline or staged in the landing area of the raw
bucket. Every instance is fetched and validated before any is stored, so a bad study is
dead-lettered whole (to the raw-zone dead-letter topic: its bytes hold PHI) and nothing of it
is half-stored.
"""

from __future__ import annotations

from fetalmlops.common.bus import Record, Rejected, read_event
from fetalmlops.common.bus.consume import Handler
from fetalmlops.common.db import IngestChannel
from fetalmlops.common.events import UnknownSchema
from fetalmlops.common.store import ObjectNotFound
from fetalmlops.ingest.intake import REFUSED, Intake
from fetalmlops.ingest.validation import Invalid
from fetalmlops.v1 import studies_pb2

LANDING_PREFIX = "landing/"


def instance_bytes(
    intake: Intake, instance: studies_pb2.StudyIncoming.Instance, position: int
) -> bytes:
    if instance.WhichOneof("content") == "inline":
        if len(instance.inline) > intake.limits.inline_max_bytes:
            raise Rejected(
                f"instance {position}: inline content over {intake.limits.inline_max_bytes} bytes"
            )
        return bytes(instance.inline)
    if instance.WhichOneof("content") == "landing":
        ref = instance.landing
        # Only the landing area of the raw bucket: a message must not make ingest read elsewhere.
        if ref.bucket != intake.settings.buckets.raw or not ref.key.startswith(LANDING_PREFIX):
            raise Rejected(f"instance {position}: landing reference outside {LANDING_PREFIX}")
        try:
            return bytes(intake.store.get(ref.bucket, ref.key))
        except ObjectNotFound:
            raise Rejected(f"instance {position}: landing object not found") from None
    raise Rejected(f"instance {position}: no content")


def handler(intake: Intake) -> Handler:
    def handle(record: Record) -> None:
        try:
            study = read_event(record)
        except UnknownSchema as exc:
            raise Rejected(str(exc)) from None
        if not isinstance(study, studies_pb2.StudyIncoming):
            raise Rejected(f"expected StudyIncoming, got {type(study).__name__}")
        if not study.instances:
            raise Rejected("study has no instances")
        payloads = [instance_bytes(intake, inst, n) for n, inst in enumerate(study.instances, 1)]
        checked = []
        for position, data in enumerate(payloads, 1):
            try:
                checked.append((data, intake.check(data)))
            except Invalid as exc:
                REFUSED.labels(IngestChannel.KAFKA.value, exc.verdict.value).inc()
                raise Rejected(f"instance {position}: {exc.reason}") from None
        for data, image in checked:
            intake.admit(data, image, IngestChannel.KAFKA)

    return handle
