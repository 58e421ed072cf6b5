"""The span channel of the PHI leak scan: an image through ingest and the anonymizer, in process.

Every span name, attribute and event either service records is searched for the identifying
values planted in the image (the other channels are searched in the real-stack tests).
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pydicom
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import Consumer, EmbeddedBus, Record, consume
from fetalmlops.common.db import IngestChannel, create_engine_for, upgrade
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.settings import IngestSettings


def test_no_span_carries_phi(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store, bus, engine = (
        LocalStore(settings.store_dir),
        EmbeddedBus(partitions=1),
        create_engine_for(url),
    )
    store.ensure_buckets(settings.buckets.all())
    data = sample_dicom(51)
    source = pydicom.dcmread(io.BytesIO(data))

    Intake(settings, IngestSettings(), store, bus, engine).receive(data, IngestChannel.REST)
    anonymizer = Anonymizer(settings, AnonymizerSettings(secret="span-secret"), store, bus, engine)
    stop = threading.Event()

    def handle(record: Record) -> None:
        anonymizer.handle(record)
        stop.set()

    consume(
        bus,
        Consumer(
            [settings.topics.images_received], "anonymizer", handle, settings.topics.deadletter
        ),
        stop,
    )

    recorded = spans.get_finished_spans()
    assert {s.name for s in recorded} >= {
        f"{settings.topics.images_received} publish",
        f"{settings.topics.images_received} process",
        f"{settings.topics.images_anonymized} publish",
    }
    text = " ".join(
        [s.name for s in recorded]
        + [str(v) for s in recorded for v in (s.attributes or {}).values()]
        + [str(v) for s in recorded for e in s.events for v in (e.attributes or {}).values()]
    )
    keywords = ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID")
    phi = [str(source.get(k)) for k in (*keywords, "InstitutionName", "PatientBirthDate")]
    assert [value for value in phi if value in text] == []
