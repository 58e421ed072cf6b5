"""The same source instance received twice is one catalog image, announced once.

Embedded (SQLite, a local object store, the in-process bus): copies of one instance in other
transfer syntaxes, a copy catalogued by another delivery between this one's check and its row,
a crash between the row and its event, a picture re-sent with other metadata, and labels naming
either copy's raw sha256 before or after it arrives.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from PIL import Image as Picture
from PIL import PngImagePlugin
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select

from fetalmlops.anonymizer.catalog import Catalog, image_id
from fetalmlops.anonymizer.images import Anonymizer, Output
from fetalmlops.anonymizer.instances import event_id
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import (
    Bus,
    Consumer,
    EmbeddedBus,
    Record,
    consume,
    publish_event,
    read_event,
)
from fetalmlops.common.bus.base import Headers
from fetalmlops.common.db import Image, ImageCopy, Label, create_engine_for, session_scope
from fetalmlops.common.db import upgrade as migrate
from fetalmlops.common.planes import Plane
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.v1 import common_pb2, images_pb2, labels_pb2

SECRET = "duplicates-secret"


@dataclass
class FlakyBus:
    """The in-process bus, except that its first ``failures`` announcements fail, as Kafka does
    when the broker goes away between the catalog row and the event."""

    bus: EmbeddedBus
    topic: str
    failures: int = 1
    refused: list[str] = field(default_factory=list)

    def ensure_topics(self, topics: list[str], partitions: int) -> None:
        self.bus.ensure_topics(topics, partitions)

    def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        if topic == self.topic and len(self.refused) < self.failures:
            self.refused.append(key)
            raise ConnectionError("broker unavailable")
        self.bus.publish(topic, key, value, headers)

    def subscribe(self, topics: list[str], group: str):  # type: ignore[no-untyped-def]
        return self.bus.subscribe(topics, group)

    def close(self) -> None:
        self.bus.close()


def anonymizer_for(tmp_path: Path, bus: Bus | None = None, **own: object) -> Anonymizer:
    url = f"sqlite:///{tmp_path}/catalog.db"
    migrate(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    settings_own = AnonymizerSettings(secret=SECRET, **own)  # type: ignore[arg-type]
    engine = create_engine_for(url)
    return Anonymizer(settings, settings_own, store, bus or EmbeddedBus(partitions=1), engine)


@pytest.fixture
def anonymizer(tmp_path: Path) -> Anonymizer:
    return anonymizer_for(tmp_path)


def resent(data: bytes, syntax: UID, **changes: object) -> bytes:
    """The same instance as a PACS would re-send it: another transfer syntax (and, optionally,
    an attribute the profile keeps changed, so the de-identified bytes differ too)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=syntax.is_implicit_VR,
               little_endian=True)  # fmt: skip
    return buffer.getvalue()


def received(anonymizer: Anonymizer, data: bytes, media_type: str = "application/dicom") -> str:
    sha = hashlib.sha256(data).hexdigest()
    anonymizer.store.put("fetal-raw", f"sha256/{sha}", data, content_type=media_type)
    event = images_pb2.ImageReceived(
        sha256=sha,
        raw=common_pb2.ObjectRef(bucket="fetal-raw", key=f"sha256/{sha}"),
        media_type=media_type,
    )
    publish_event(anonymizer.bus, anonymizer.settings.topics.images_received, sha, event, "test")
    return sha


def run_consumer(anonymizer: Anonymizer, expected: int) -> list[Record]:
    """The real consumer loop until ``expected`` records are handled; the dead letters."""
    stop, seen = threading.Event(), []

    def counting(record: Record) -> None:
        seen.append(record)
        try:
            anonymizer.handle(record)
        finally:
            if len(seen) >= expected:
                stop.set()

    topics = anonymizer.settings.topics
    consume(
        anonymizer.bus,
        Consumer([topics.images_received], "anonymizer", counting, topics.deadletter),
        stop,
    )
    return poll(anonymizer, topics.deadletter)


def poll(anonymizer: Anonymizer, topic: str) -> list[Record]:
    subscription = anonymizer.bus.subscribe([topic], "audit")
    found = subscription.poll(0.1)
    subscription.close()
    return found


def announced(anonymizer: Anonymizer) -> list[images_pb2.ImageAnonymized]:
    records = poll(anonymizer, anonymizer.settings.topics.images_anonymized)
    return [e for e in map(read_event, records) if isinstance(e, images_pb2.ImageAnonymized)]


def objects(anonymizer: Anonymizer) -> list[str]:
    return sorted(o.key for o in anonymizer.store.list(anonymizer.settings.buckets.anonymized))


def copies(anonymizer: Anonymizer) -> dict[str, str]:
    with session_scope(anonymizer.engine) as session:
        return {c.copy_id: c.image_id for c in session.scalars(select(ImageCopy))}


def count_images(anonymizer: Anonymizer) -> int:
    with session_scope(anonymizer.engine) as session:
        return int(session.scalar(select(func.count()).select_from(Image)) or 0)


def test_one_instance_in_three_encodings_is_one_image_announced_once(
    anonymizer: Anonymizer,
) -> None:
    original = sample_dicom(61)
    implicit = resent(original, ImplicitVRLittleEndian)
    # Same instance, other de-identified bytes: a kept attribute differs in the re-sent copy.
    corrected = resent(original, ExplicitVRLittleEndian, WindowCenter="128", WindowWidth="255")
    shas = [received(anonymizer, data) for data in (original, implicit, corrected, original)]
    assert len(set(shas)) == 3, "three different raw copies (and one redelivery)"

    assert run_consumer(anonymizer, 4) == [], "a copy is no failure and no dead letter"

    first = image_id(SECRET.encode(), shas[0])
    (event,) = announced(anonymizer)
    assert event.image_id == first and event.meta.event_id == event_id(first)
    assert count_images(anonymizer) == 1
    assert copies(anonymizer) == {image_id(SECRET.encode(), sha): first for sha in shas}
    assert objects(anonymizer) == [f"canonical/{first}.png", f"images/{first}.dcm"]
    with session_scope(anonymizer.engine) as session:
        image = session.get(Image, first)
        assert image is not None and image.published_at is not None
        assert image.sop_instance_uid is not None and image.sop_instance_uid.startswith("2.25.")


class Racing(Anonymizer):
    """Another delivery catalogues the other copy while this one writes its objects: both
    checks found no image, so this one's row meets the unique constraint."""

    other: bytes = b""

    def write_objects(self, image_id: str, output: Output, cohort: str) -> Image:
        image = super().write_objects(image_id, output, cohort)
        if self.other:
            other, self.other = self.other, b""
            Anonymizer.handle(self, racing_record(self, other))
        return image


def racing_record(anonymizer: Anonymizer, data: bytes) -> Record:
    bus = EmbeddedBus(partitions=1)
    sha = hashlib.sha256(data).hexdigest()
    anonymizer.store.put("fetal-raw", f"sha256/{sha}", data, content_type="application/dicom")
    event = images_pb2.ImageReceived(
        sha256=sha,
        raw=common_pb2.ObjectRef(bucket="fetal-raw", key=f"sha256/{sha}"),
        media_type="application/dicom",
    )
    publish_event(bus, anonymizer.settings.topics.images_received, sha, event, "test")
    subscription = bus.subscribe([anonymizer.settings.topics.images_received], "race")
    (record,) = subscription.poll(0.1)
    subscription.close()
    return record


def test_a_constraint_conflict_is_a_copy_not_a_retried_failure(tmp_path: Path) -> None:
    base = anonymizer_for(tmp_path)
    racing = Racing(base.settings, base.own, base.store, base.bus, base.engine)
    original = sample_dicom(62)
    implicit = resent(original, ImplicitVRLittleEndian)
    racing.other = implicit

    racing.handle(racing_record(racing, original))  # raises nothing

    winner = image_id(SECRET.encode(), hashlib.sha256(implicit).hexdigest())
    loser = image_id(SECRET.encode(), hashlib.sha256(original).hexdigest())
    assert count_images(racing) == 1 and copies(racing) == {winner: winner, loser: winner}
    assert objects(racing) == [f"canonical/{winner}.png", f"images/{winner}.dcm"], "no orphans"
    assert [e.image_id for e in announced(racing)] == [winner]


def test_a_crash_between_row_and_event_publishes_the_missing_event_once(tmp_path: Path) -> None:
    topics = Settings().topics
    flaky = FlakyBus(EmbeddedBus(partitions=1), topics.images_anonymized, failures=1)
    anonymizer = anonymizer_for(tmp_path, flaky)
    data = sample_dicom(63)
    received(anonymizer, data)
    record = racing_record(anonymizer, data)
    first = image_id(SECRET.encode(), hashlib.sha256(data).hexdigest())

    with pytest.raises(ConnectionError):
        anonymizer.handle(record)
    with session_scope(anonymizer.engine) as session:
        image = session.get(Image, first)
        assert image is not None and image.published_at is None, "row durable, event missing"
    assert announced(anonymizer) == []

    anonymizer.handle(record)  # the redelivery
    anonymizer.handle(record)  # and one more, after the event went out
    assert run_consumer(anonymizer, 1) == []  # the original delivery, through the loop

    (event,) = announced(anonymizer)
    assert event.image_id == first and event.meta.event_id == event_id(first)
    assert flaky.refused == [first] and count_images(anonymizer) == 1


def test_a_picture_re_sent_with_other_metadata_is_one_image(tmp_path: Path) -> None:
    anonymizer = anonymizer_for(tmp_path, pictures_deidentified=True)
    plain = sample_picture(64)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a viewer's export")
    annotated = io.BytesIO()
    Picture.open(io.BytesIO(plain)).save(annotated, "PNG", pnginfo=info)
    for data in (plain, annotated.getvalue()):
        received(anonymizer, data, "image/png")

    assert run_consumer(anonymizer, 2) == []
    assert count_images(anonymizer) == 1 and len(copies(anonymizer)) == 2
    assert len(announced(anonymizer)) == 1 and len(objects(anonymizer)) == 2


def label(raw_sha256: str, annotator: str, plane: int) -> Record:
    bus = EmbeddedBus(partitions=1)
    event = labels_pb2.LabelAttached(raw_sha256=raw_sha256, plane=plane, annotator=annotator)  # type: ignore[arg-type]
    topic = Settings().topics.labels
    publish_event(bus, topic, raw_sha256, event, "test")
    subscription = bus.subscribe([topic], "labels")
    (record,) = subscription.poll(0.1)
    subscription.close()
    return record


def test_a_label_for_either_copy_lands_on_the_one_image(anonymizer: Anonymizer) -> None:
    catalog = Catalog(anonymizer.own, anonymizer.engine)
    original = sample_dicom(65)
    implicit = resent(original, ImplicitVRLittleEndian)
    first_sha, second_sha = (hashlib.sha256(d).hexdigest() for d in (original, implicit))

    # Before any copy arrives, a label names the second copy's sha256 (what ingest told its sender).
    catalog.handle(label(second_sha, "early", labels_pb2.PLANE_FETAL_FEMUR))
    for data in (original, implicit):
        received(anonymizer, data)
    assert run_consumer(anonymizer, 2) == []
    # After both arrived, another annotator labels the second copy too.
    catalog.handle(label(second_sha, "late", labels_pb2.PLANE_FETAL_FEMUR))

    first = image_id(SECRET.encode(), first_sha)
    with session_scope(anonymizer.engine) as session:
        image = session.get(Image, first)
        assert image is not None
        assert sorted((x.annotator, x.plane) for x in image.labels) == [
            ("early", Plane.FETAL_FEMUR),
            ("late", Plane.FETAL_FEMUR),
        ]
        late = session.scalars(select(Label).where(Label.annotator == "late")).one()
        assert late.image_id == first, "a label for a known copy is written under the image"
