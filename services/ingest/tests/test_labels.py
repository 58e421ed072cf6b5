"""The labels API publishes fetal.labels events, and refuses what it cannot map."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from fetalmlops.common.bus import Bus, EmbeddedBus, read_event
from fetalmlops.common.planes import Plane
from fetalmlops.common.service import create_app
from fetalmlops.datasets.phantom.samples import sample_picture
from fetalmlops.datasets.readers import Sample
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.importer import push
from fetalmlops.ingest.intake import Intake
from fetalmlops.v1 import labels_pb2

from .conftest import WRITER

LABELLER = {"Authorization": "Bearer labeller"}
SHA = "ab" * 32


def api(intake: Intake) -> TestClient:
    app = create_app("ingest", {})
    add_routes(app, intake)
    return TestClient(app)


def labels(bus: Bus, topic: str) -> list[labels_pb2.LabelAttached]:
    assert isinstance(bus, EmbeddedBus)
    subscription = bus.subscribe([topic], "test-labels")
    events = [read_event(r) for r in subscription.poll(0.2)]
    subscription.close()
    return [e for e in events if isinstance(e, labels_pb2.LabelAttached)]


def test_a_label_with_dataset_names_is_published(intake: Intake) -> None:
    body = {
        "raw_sha256": SHA,
        "plane": "Fetal brain",
        "brain_plane": "Trans-thalamic",
        "annotator": "reader-7",
    }
    response = api(intake).post("/v1/labels", json=body, headers=LABELLER)
    assert response.status_code == 202, response.text
    (event,) = labels(intake.bus, intake.settings.topics.labels)
    assert event.raw_sha256 == SHA and event.WhichOneof("image") == "raw_sha256"
    assert event.plane == labels_pb2.PLANE_FETAL_BRAIN
    assert event.brain_plane == labels_pb2.BRAIN_PLANE_TRANS_THALAMIC
    assert event.meta.event_id == response.json()["event_id"]


def test_bad_labels_are_refused_with_a_reason(intake: Intake) -> None:
    client = api(intake)
    base = {"raw_sha256": SHA, "plane": "femur", "annotator": "reader-7"}
    cases = [
        {**base, "plane": "kidney"},
        {**base, "annotator": "Dr Jane Doe"},  # a name, not a pseudonymous id
        {**base, "raw_sha256": "not-a-hash"},
        {**base, "image_id": "img-1"},  # two references
        {"plane": "femur", "annotator": "reader-7"},  # none
    ]
    for body in cases:
        response = client.post("/v1/labels", json=body, headers=LABELLER)
        assert response.status_code == 422, body
        assert response.json()["detail"]
    assert client.post("/v1/labels", json=base, headers=WRITER).status_code == 403
    assert labels(intake.bus, intake.settings.topics.labels) == []


def test_import_push_uploads_then_labels(intake: Intake, tmp_path: Path) -> None:
    image = tmp_path / "femur.png"
    image.write_bytes(sample_picture(31, "PNG"))
    client = api(intake)
    client.headers.update({"Authorization": "Bearer importer"})
    sha = push(client, Sample(image, Plane.FETAL_FEMUR), "import-test")
    (event,) = labels(intake.bus, intake.settings.topics.labels)
    assert event.raw_sha256 == sha and event.plane == labels_pb2.PLANE_FETAL_FEMUR
