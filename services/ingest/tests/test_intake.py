"""Store once, record without PHI, announce once — and re-announce what a crash left unannounced."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from fetalmlops.common.bus import EmbeddedBus, read_event
from fetalmlops.common.db import IngestChannel, IngestRecord, session_scope
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.ingest.intake import Intake, Outcome, Provenance
from fetalmlops.ingest.validation import Invalid
from fetalmlops.v1 import images_pb2


def announcements(intake: Intake) -> list[images_pb2.ImageReceived]:
    assert isinstance(intake.bus, EmbeddedBus)
    subscription = intake.bus.subscribe([intake.settings.topics.images_received], "test")
    events = [read_event(r) for r in subscription.poll(0.2)]
    subscription.close()
    return [e for e in events if isinstance(e, images_pb2.ImageReceived)]


def test_an_image_is_stored_recorded_and_announced_once(intake: Intake) -> None:
    data = sample_dicom(3)
    first = intake.receive(data, IngestChannel.REST)
    again = intake.receive(data, IngestChannel.C_STORE)

    assert (first.outcome, again.outcome) == (Outcome.STORED, Outcome.DUPLICATE)
    assert intake.store.get("fetal-raw", f"sha256/{first.sha256}") == data
    (event,) = announcements(intake)
    assert event.sha256 == first.sha256 and event.raw.key == f"sha256/{first.sha256}"
    assert event.channel == images_pb2.INGEST_CHANNEL_REST
    with session_scope(intake.engine) as session:
        (record,) = session.scalars(select(IngestRecord)).all()
        assert record.announced_at is not None and record.channel is IngestChannel.REST
        assert (record.modality, record.rows, record.columns) == ("US", 600, 800)


def test_nothing_of_a_refused_image_is_stored(intake: Intake) -> None:
    with pytest.raises(Invalid):
        intake.receive(sample_dicom(3)[:5000], IngestChannel.REST)
    assert list(intake.store.list("fetal-raw")) == []
    assert announcements(intake) == []
    with session_scope(intake.engine) as session:
        assert session.scalars(select(IngestRecord)).all() == []


def test_a_crash_before_the_announcement_is_healed_by_the_retry(intake: Intake) -> None:
    class Down(EmbeddedBus):
        def publish(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("broker unreachable")

    healthy = intake.bus
    intake.bus = Down()
    with pytest.raises(ConnectionError):
        intake.receive(sample_dicom(4), IngestChannel.KAFKA)
    intake.bus = healthy
    retry = intake.receive(sample_dicom(4), IngestChannel.KAFKA)
    assert retry.outcome is Outcome.STORED
    assert [e.sha256 for e in announcements(intake)] == [retry.sha256]


def test_the_record_holds_no_phi(intake: Intake) -> None:
    import json

    import pydicom

    data = sample_dicom(5)
    intake.receive(data, IngestChannel.REST)
    ds = pydicom.dcmread(__import__("io").BytesIO(data))
    phi = [
        str(ds.PatientName),
        ds.PatientID,
        ds.AccessionNumber,
        ds.StudyInstanceUID,
        ds.SOPInstanceUID,
    ]
    with session_scope(intake.engine) as session:
        (record,) = session.scalars(select(IngestRecord)).all()
        row = json.dumps(
            {c.name: str(getattr(record, c.name)) for c in IngestRecord.__table__.columns}
        )
    assert not [value for value in phi if value in row]
    (event,) = announcements(intake)
    assert not [value for value in phi if value.encode() in event.SerializeToString()]


def test_a_declared_patient_stays_in_the_raw_zone_and_the_cohort_travels(intake: Intake) -> None:
    data = sample_picture(5)
    receipt = intake.receive(data, IngestChannel.IMPORT, Provenance("highend-a", "P-0042"))

    (event,) = announcements(intake)
    assert event.cohort == "highend-a"
    assert event.context.bucket == "fetal-raw"
    assert json.loads(intake.store.get("fetal-raw", event.context.key)) == {"patient_id": "P-0042"}
    assert "P-0042" not in str(event) and "P-0042" not in event.context.key
    assert receipt.sha256 in event.context.key


def test_nothing_declared_means_no_context(intake: Intake) -> None:
    intake.receive(sample_picture(6), IngestChannel.REST)
    (event,) = announcements(intake)
    assert not event.HasField("context") and event.cohort == ""
