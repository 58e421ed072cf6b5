"""The catalog: labels join their images by pseudonym, in either order; cohort and declared
patients reach the catalog without the patient id leaving the raw zone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from fetalmlops.anonymizer.catalog import Catalog, image_id, legacy_image_id
from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.pseudonyms import patient_pseudonym
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import EmbeddedBus, Record, Rejected, publish_event
from fetalmlops.common.db import (
    Image,
    ImageCopy,
    Label,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.samples import sample_picture
from fetalmlops.v1 import common_pb2, images_pb2, labels_pb2

SECRET = "unit-secret"


@pytest.fixture
def anonymizer(tmp_path: Path) -> Anonymizer:
    url = f"sqlite:///{tmp_path}/catalog.db"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    own = AnonymizerSettings(secret=SECRET, pictures_deidentified=True)
    return Anonymizer(settings, own, store, EmbeddedBus(partitions=1), create_engine_for(url))


def only_record(bus: EmbeddedBus, topic: str) -> Record:
    subscription = bus.subscribe([topic], "test")
    (record,) = subscription.poll(0.1)
    subscription.close()
    return record


def label_record(anonymizer: Anonymizer, event: labels_pb2.LabelAttached) -> Record:
    bus = EmbeddedBus(partitions=1)
    publish_event(bus, anonymizer.settings.topics.labels, "key", event, "test")
    return only_record(bus, anonymizer.settings.topics.labels)


def picture_received(
    anonymizer: Anonymizer, data: bytes, cohort: str = "", patient_id: str = ""
) -> Record:
    sha = hashlib.sha256(data).hexdigest()
    anonymizer.store.put("fetal-raw", f"sha256/{sha}", data, content_type="image/png")
    event = images_pb2.ImageReceived(
        sha256=sha,
        raw=common_pb2.ObjectRef(bucket="fetal-raw", key=f"sha256/{sha}"),
        media_type="image/png",
        cohort=cohort,
    )
    if patient_id:
        key = f"context/{sha}.json"
        anonymizer.store.put("fetal-raw", key, json.dumps({"patient_id": patient_id}).encode())
        event.context.CopyFrom(common_pb2.ObjectRef(bucket="fetal-raw", key=key))
    bus = EmbeddedBus(partitions=1)
    publish_event(bus, anonymizer.settings.topics.images_received, sha, event, "test")
    return only_record(bus, anonymizer.settings.topics.images_received)


def test_a_label_before_its_image_joins_it_when_catalogued(anonymizer: Anonymizer) -> None:
    data = sample_picture(7)
    sha = hashlib.sha256(data).hexdigest()
    catalog = Catalog(anonymizer.own, anonymizer.engine)
    label = labels_pb2.LabelAttached(
        raw_sha256=sha,
        plane=labels_pb2.PLANE_FETAL_BRAIN,
        brain_plane=labels_pb2.BRAIN_PLANE_TRANS_THALAMIC,
        annotator="annotator-1",
    )

    catalog.handle(label_record(anonymizer, label))
    anonymizer.handle(picture_received(anonymizer, data, cohort="highend-a", patient_id="P-0042"))

    with session_scope(anonymizer.engine) as session:
        image = session.get(Image, image_id(SECRET.encode(), sha))
        assert image is not None
        assert image.cohort == "highend-a"
        assert image.patient_pseudonym == patient_pseudonym(SECRET.encode(), "P-0042")
        assert [(x.plane, x.brain_plane) for x in image.labels] == [
            (Plane.FETAL_BRAIN, BrainPlane.TRANS_THALAMIC)
        ]


def test_the_declared_patient_id_stays_in_the_raw_zone(anonymizer: Anonymizer) -> None:
    anonymizer.handle(picture_received(anonymizer, sample_picture(8), patient_id="P-0042"))

    anonymized = only_record(anonymizer.bus, anonymizer.settings.topics.images_anonymized)
    assert b"P-0042" not in anonymized.value
    bucket = anonymizer.settings.buckets.anonymized
    objects = list(anonymizer.store.list(bucket))
    assert len(objects) == 2
    for info in objects:
        assert b"P-0042" not in anonymizer.store.get(bucket, info.key)
    with session_scope(anonymizer.engine) as session:
        (image,) = session.scalars(select(Image)).all()
        assert "P-0042" not in repr(vars(image))


def test_pictures_of_one_declared_patient_share_a_pseudonym(anonymizer: Anonymizer) -> None:
    for seed in (9, 10):
        anonymizer.handle(picture_received(anonymizer, sample_picture(seed), patient_id="P-7"))
    anonymizer.handle(picture_received(anonymizer, sample_picture(11)))

    with session_scope(anonymizer.engine) as session:
        pseudonyms = sorted(str(i.patient_pseudonym) for i in session.scalars(select(Image)))
    assert pseudonyms.count(patient_pseudonym(SECRET.encode(), "P-7")) == 2
    assert "None" in pseudonyms


def test_a_replayed_or_corrected_label_keeps_one_reading_per_annotator(
    anonymizer: Anonymizer,
) -> None:
    catalog = Catalog(anonymizer.own, anonymizer.engine)
    first = labels_pb2.LabelAttached(
        image_id="img-1", plane=labels_pb2.PLANE_FETAL_FEMUR, annotator="a1"
    )
    corrected = labels_pb2.LabelAttached(
        image_id="img-1", plane=labels_pb2.PLANE_FETAL_ABDOMEN, annotator="a1"
    )
    other = labels_pb2.LabelAttached(
        image_id="img-1", plane=labels_pb2.PLANE_FETAL_ABDOMEN, annotator="a2"
    )
    for event in (first, first, corrected, other):
        catalog.handle(label_record(anonymizer, event))

    with session_scope(anonymizer.engine) as session:
        rows = session.execute(select(Label.annotator, Label.plane).order_by(Label.annotator))
        assert list(rows) == [("a1", Plane.FETAL_ABDOMEN), ("a2", Plane.FETAL_ABDOMEN)]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (labels_pb2.LabelAttached(plane=labels_pb2.PLANE_OTHER, annotator="a"), "names no image"),
        (labels_pb2.LabelAttached(image_id="img-1", annotator="a"), "names no plane"),
    ],
)
def test_a_label_that_cannot_be_catalogued_is_rejected(
    anonymizer: Anonymizer, event: labels_pb2.LabelAttached, reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        Catalog(anonymizer.own, anonymizer.engine).handle(label_record(anonymizer, event))
    with session_scope(anonymizer.engine) as session:
        assert session.scalars(select(Label)).all() == []


def test_an_image_catalogued_under_a_48_bit_id_still_resolves(anonymizer: Anonymizer) -> None:
    data = sample_picture(12)
    sha = hashlib.sha256(data).hexdigest()
    anonymizer.handle(picture_received(anonymizer, data))
    wide, legacy = image_id(SECRET.encode(), sha), legacy_image_id(SECRET.encode(), sha)
    assert len(wide) == len("img-") + 32 and wide.startswith(legacy)
    with session_scope(anonymizer.engine) as session:  # as a catalog from before the widening
        session.execute(delete(ImageCopy))
        session.execute(update(Image).values(id=legacy))
        session.add(ImageCopy(copy_id=legacy, image_id=legacy))

    label = labels_pb2.LabelAttached(
        raw_sha256=sha, plane=labels_pb2.PLANE_FETAL_FEMUR, annotator="a1"
    )
    Catalog(anonymizer.own, anonymizer.engine).handle(label_record(anonymizer, label))
    anonymizer.handle(picture_received(anonymizer, data))  # a replay of its delivery

    with session_scope(anonymizer.engine) as session:
        (image,) = session.scalars(select(Image)).all()
        assert image.id == legacy
        assert [x.plane for x in image.labels] == [Plane.FETAL_FEMUR]
        # Both found the legacy copy: no copy was recorded under the wide id.
        assert session.scalars(select(ImageCopy.copy_id)).all() == [legacy]
        assert session.scalars(select(Label.image_id)).all() == [legacy]
    subscription = anonymizer.bus.subscribe([anonymizer.settings.topics.images_anonymized], "t")
    announced = [images_pb2.ImageAnonymized.FromString(r.value) for r in subscription.poll(0.1)]
    assert [e.image_id for e in announced] == [wide]  # the replay found it, announced already
