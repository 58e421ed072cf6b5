"""The images consumer, embedded: raw in, de-identified out, catalogued once, refusals held."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from pathlib import Path

import pydicom
import pytest
from PIL import Image as Picture
from PIL import PngImagePlugin
from sqlalchemy import select

from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import Consumer, EmbeddedBus, Record, consume, publish_event, read_event
from fetalmlops.common.bus.consume import DLQ_ERROR
from fetalmlops.common.db import Image, create_engine_for, session_scope, upgrade
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.v1 import common_pb2, images_pb2


@pytest.fixture
def anonymizer(tmp_path: Path) -> Anonymizer:
    url = f"sqlite:///{tmp_path}/catalog.db"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    own = AnonymizerSettings(secret="unit-secret")
    return Anonymizer(settings, own, store, EmbeddedBus(partitions=1), create_engine_for(url))


def received(anonymizer: Anonymizer, data: bytes, media_type: str) -> None:
    sha = hashlib.sha256(data).hexdigest()
    anonymizer.store.put("fetal-raw", f"sha256/{sha}", data, content_type=media_type)
    event = images_pb2.ImageReceived(
        sha256=sha,
        raw=common_pb2.ObjectRef(bucket="fetal-raw", key=f"sha256/{sha}"),
        media_type=media_type,
    )
    publish_event(anonymizer.bus, anonymizer.settings.topics.images_received, sha, event, "test")


def run_consumer(anonymizer: Anonymizer, expected: int) -> list[Record]:
    """Consume until ``expected`` records are handled; returns the dead letters."""
    stop, seen = threading.Event(), []

    def counting(record: Record) -> None:
        seen.append(record)
        try:
            anonymizer.handle(record)
        finally:
            if len(seen) >= expected:
                stop.set()

    settings = anonymizer.settings
    consume(
        anonymizer.bus,
        Consumer(
            [settings.topics.images_received], "anonymizer", counting, settings.topics.deadletter
        ),
        stop,
    )
    letters = anonymizer.bus.subscribe([settings.topics.deadletter], "audit")
    dead = letters.poll(0.1)
    letters.close()
    return dead


def published(anonymizer: Anonymizer) -> list[images_pb2.ImageAnonymized]:
    subscription = anonymizer.bus.subscribe([anonymizer.settings.topics.images_anonymized], "audit")
    events = [read_event(r) for r in subscription.poll(0.1)]
    subscription.close()
    return [e for e in events if isinstance(e, images_pb2.ImageAnonymized)]


def test_a_dicom_is_anonymized_catalogued_and_published_once(
    anonymizer: Anonymizer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = sample_dicom(41)
    source = pydicom.dcmread(io.BytesIO(data))
    received(anonymizer, data, "application/dicom")
    received(anonymizer, data, "application/dicom")  # redelivered
    assert run_consumer(anonymizer, 2) == []

    (event,) = published(anonymizer)
    assert event.image_id.startswith("img-") and event.patient_pseudonym.startswith("FM")
    assert event.device.model == source.ManufacturerModelName and event.geometry.rows == 600
    store = anonymizer.store
    output = store.get(event.dicom.bucket, event.dicom.key)
    canonical = Picture.open(io.BytesIO(store.get(event.canonical.bucket, event.canonical.key)))
    assert canonical.size == (256, 256) and canonical.mode == "L"
    with session_scope(anonymizer.engine) as session:
        (row,) = session.scalars(select(Image)).all()
        assert (row.id, row.patient_pseudonym) == (event.image_id, event.patient_pseudonym)
        catalogue = " ".join(str(getattr(row, c.name)) for c in Image.__table__.columns)
    phi = [
        str(source.PatientName),
        source.PatientID,
        source.AccessionNumber,
        source.StudyInstanceUID,
        source.InstitutionName,
    ]
    channels = {
        "object": output.decode("latin-1"),
        "event": event.SerializeToString().decode("latin-1"),
        "catalog": catalogue,
        "logs": caplog.text,
        "keys": " ".join(o.key for o in store.list("fetal-anonymized")),
    }
    assert {name: [v for v in phi if v in text] for name, text in channels.items()} == {
        name: [] for name in channels
    }


def test_an_image_the_gate_cannot_clear_is_quarantined_and_dead_lettered(
    anonymizer: Anonymizer,
) -> None:
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(42)))
    del ds.SequenceOfUltrasoundRegions  # nowhere to say what may stay
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    received(anonymizer, buffer.getvalue(), "application/dicom")

    (letter,) = run_consumer(anonymizer, 1)
    assert letter.header(DLQ_ERROR).startswith(b"Rejected: quarantined: NoRegions")
    assert published(anonymizer) == [] and list(anonymizer.store.list("fetal-anonymized")) == []
    (note,) = anonymizer.store.list("fetal-raw", "quarantine/")
    assert note.key.endswith(".json")


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"masks": {"800x600": [(80, 80, 720, 590)]}}, id="mask"),
        pytest.param({"ocr": True}, id="ocr", marks=pytest.mark.needs("tesseract")),
    ],
)
def test_a_study_without_regions_is_published_when_a_mask_or_ocr_cleans_it(
    anonymizer: Anonymizer, options: dict[str, object]
) -> None:
    own = AnonymizerSettings(secret="unit-secret", **options)  # type: ignore[arg-type]
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(44)))
    del ds.SequenceOfUltrasoundRegions
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    cleaning = Anonymizer(
        anonymizer.settings, own, anonymizer.store, anonymizer.bus, anonymizer.engine
    )
    received(cleaning, buffer.getvalue(), "application/dicom")

    assert run_consumer(cleaning, 1) == []
    (event,) = published(cleaning)
    assert event.geometry.rows == 600 and event.geometry.pixel_spacing_mm == 0.0
    with session_scope(cleaning.engine) as session:
        assert session.get(Image, event.image_id) is not None


def test_pictures_lose_their_metadata_when_accepted(anonymizer: Anonymizer, tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient DOE^JANE MRN123456")
    buffer = io.BytesIO()
    Picture.open(io.BytesIO(sample_picture(43))).save(buffer, "PNG", pnginfo=info)
    received(anonymizer, buffer.getvalue(), "image/png")
    (refused,) = run_consumer(anonymizer, 1)
    assert b"NoRegions" in (refused.header(DLQ_ERROR) or b"")

    own = AnonymizerSettings(secret="unit-secret", pictures_deidentified=True)
    trusting = Anonymizer(
        anonymizer.settings, own, anonymizer.store, anonymizer.bus, anonymizer.engine
    )
    trusting.handle(
        next(
            r
            for r in anonymizer.bus.subscribe(
                [anonymizer.settings.topics.images_received], "again"
            ).poll(0.1)
        )
    )
    (event,) = published(anonymizer)
    output = anonymizer.store.get(event.dicom.bucket, event.dicom.key)
    assert b"DOE^JANE" not in output and b"MRN123456" not in output
    assert Picture.open(io.BytesIO(output)).size == (800, 600)


def test_an_unreadable_image_is_quarantined_without_quoting_it(anonymizer: Anonymizer) -> None:
    data = sample_dicom(44)
    broken = (
        data[:132] + b"\x10\x00\x10\x00PN\x20\x00SMITH^JOHN-QUOTED-BY-A-DECODER"
    )  # truncated header
    received(anonymizer, broken, "application/dicom")
    (letter,) = run_consumer(anonymizer, 1)
    reason = letter.header(DLQ_ERROR) or b""
    assert reason.startswith(b"Rejected: quarantined") and b"SMITH" not in reason
    (note,) = anonymizer.store.list("fetal-raw", "quarantine/")
    assert note.key.endswith(".json")
