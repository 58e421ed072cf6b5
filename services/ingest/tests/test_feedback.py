"""The feedback API publishes fetal.feedback events, keyed by the prediction they correct."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fetalmlops.common.bus import Bus, EmbeddedBus, read_event
from fetalmlops.common.service import create_app
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.intake import Intake
from fetalmlops.v1 import feedback_pb2, labels_pb2

REVIEWER = {"Authorization": "Bearer reviewer"}
LABELLER = {"Authorization": "Bearer labeller"}
# As the inference service answers: its own request id, then the image's index in it.
PREDICTION = f"{uuid.uuid4().hex}-3"


def api(intake: Intake) -> TestClient:
    app = create_app("ingest", {})
    add_routes(app, intake)
    return TestClient(app)


def given(bus: Bus, topic: str) -> list[tuple[str | None, feedback_pb2.FeedbackGiven]]:
    assert isinstance(bus, EmbeddedBus)
    subscription = bus.subscribe([topic], "test-feedback")
    records = subscription.poll(0.2)
    subscription.close()
    return [
        (r.key, e) for r in records if isinstance(e := read_event(r), feedback_pb2.FeedbackGiven)
    ]


def test_feedback_is_published_keyed_by_its_prediction(intake: Intake) -> None:
    body = {
        "prediction_id": PREDICTION,
        "true_plane": "fetal_brain",
        "true_brain_plane": "trans_cerebellum",
        "reviewer": "rv-0042",
    }
    response = api(intake).post("/v1/feedback", json=body, headers=REVIEWER)

    assert response.status_code == 202, response.text
    ((key, event),) = given(intake.bus, intake.settings.topics.feedback)
    assert key == PREDICTION
    assert response.json() == {"event_id": event.meta.event_id, "status": "accepted"}
    assert event.prediction_id == PREDICTION
    assert event.true_plane == labels_pb2.PLANE_FETAL_BRAIN
    assert event.true_brain_plane == labels_pb2.BRAIN_PLANE_TRANS_CEREBELLUM
    assert event.reviewer == "rv-0042"
    assert event.meta.producer == "ingest" and event.meta.occurred_at.seconds > 0


def test_a_plane_without_a_sub_plane_names_none(intake: Intake) -> None:
    body = {"prediction_id": PREDICTION, "true_plane": "Femur", "reviewer": "rv-7"}
    assert api(intake).post("/v1/feedback", json=body, headers=REVIEWER).status_code == 202
    ((_, event),) = given(intake.bus, intake.settings.topics.feedback)
    assert event.true_plane == labels_pb2.PLANE_FETAL_FEMUR
    assert event.true_brain_plane == labels_pb2.BRAIN_PLANE_UNSPECIFIED


BASE = {"prediction_id": PREDICTION, "true_plane": "fetal_thorax", "reviewer": "rv-7"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BASE, "true_plane": "kidney"}, "true_plane"),
        ({**BASE, "true_brain_plane": "trans_thalamic"}, None),  # a thorax has no sub-plane
        ({**BASE, "reviewer": "Dr Jane Doe"}, "reviewer"),  # a name, not a pseudonymous id
        ({**BASE, "reviewer": "r" * 65}, "reviewer"),
        ({**BASE, "reviewer": ""}, "reviewer"),
        ({**BASE, "prediction_id": "ACC-2024-000917"}, "prediction_id"),  # an accession number
        ({**BASE, "prediction_id": f"{PREDICTION}-shadow"}, "prediction_id"),  # never answered
        ({**BASE, "prediction_id": uuid.uuid4().hex}, "prediction_id"),  # no image index
        ({k: v for k, v in BASE.items() if k != "reviewer"}, "reviewer"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason_that_quotes_nothing(
    intake: Intake, body: dict[str, Any], field: str | None
) -> None:
    response = api(intake).post("/v1/feedback", json=body, headers=REVIEWER)

    assert response.status_code == 422, body
    (error,) = response.json()["detail"]
    assert set(error) == {"loc", "type", "msg"} and error["msg"]
    assert field is None or error["loc"][-1] == field
    for sent in ("kidney", "Jane Doe", "ACC-2024"):
        assert sent not in response.text
    assert given(intake.bus, intake.settings.topics.feedback) == []


def test_feedback_needs_the_feedback_scope(client: TestClient) -> None:
    """On the service `main.build` assembles."""
    missing = client.post("/v1/feedback", json=BASE)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    unknown = client.post("/v1/feedback", json=BASE, headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == 401 and "invalid_token" in unknown.headers["www-authenticate"]
    labeller = client.post("/v1/feedback", json=BASE, headers=LABELLER)
    assert labeller.status_code == 403
    assert 'scope="feedback:write"' in labeller.headers["www-authenticate"]
    assert client.post("/v1/feedback", json=BASE, headers=REVIEWER).status_code == 202


def test_without_the_bus_feedback_is_a_503_to_send_again(intake: Intake) -> None:
    client, healthy = api(intake), intake.bus
    down = EmbeddedBus()
    down.close()
    intake.bus = down
    refused = client.post("/v1/feedback", json=BASE, headers=REVIEWER)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0

    intake.bus = healthy
    assert client.post("/v1/feedback", json=BASE, headers=REVIEWER).status_code == 202
    assert [key for key, _ in given(healthy, intake.settings.topics.feedback)] == [PREDICTION]
