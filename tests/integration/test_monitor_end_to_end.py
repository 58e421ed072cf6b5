"""The monitor on the real stack: a scanner change seen in served predictions, one retraining
request, the same reports after a SIGKILL, and no PHI in anything the monitor keeps or shows.

`fetalmlops run inference` serves a small model from MinIO and publishes its predictions on
Kafka. Its drift reference is measured as the trainer measures one, through the served model on
held-out frames of the high-end scanner. `fetalmlops run monitor` then watches a stream of DICOM
studies from the same scanner followed by studies from a portable one, with clinicians'
feedback on half of them, and is SIGKILLed and restarted in the middle of it. Its windows must
equal those of an uninterrupted monitor replaying the same topics, the alarm must fire on the
portable scanner only, within 200 predictions of the change, and exactly one
`fetal.training.requested` must come of it.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from fetalmlops.common.bus import EmbeddedBus, KafkaBus, Record, publish_event
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import (
    DriftWindow,
    MonitoredVersion,
    ObservedPrediction,
    RetrainingRequest,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.db.audit import entries
from fetalmlops.common.planes import plane_to_proto
from fetalmlops.common.settings import Settings, settings_env
from fetalmlops.common.store import open_store
from fetalmlops.datasets.phantom.dataset import plan
from fetalmlops.datasets.phantom.phi import hits
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.monitor.settings import MonitorSettings
from fetalmlops.monitor.stream import Monitor
from fetalmlops.v1 import feedback_pb2, models_pb2, predictions_pb2, training_pb2

from .ingest_service import from_beginning, private_topics
from .model_versions import CLASSES, build_version
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

REFERENCE, STEADY, SHIFTED = 200, 250, 250
STATISTICS = ("mean", "std", "p05", "p95", "dark_fraction")
HIGH_END, PORTABLE = "Sonora Systems/Sonora X9", "PocketEcho/PocketScan C3"


@dataclass(frozen=True)
class Study:
    dicom: bytes
    plane: str
    phi: frozenset[str]


def studies(first_seed: int, count: int, profile: str) -> list[Study]:
    """Phantom DICOM studies of one scanner, each with its true plane and its planted PHI."""

    def one(seed: int) -> Study:
        spec = plan(1, seed, (profile,))[0]
        phi = {v for v in spec.patient.phi_values() if len(v) >= 6}
        return Study(sample_dicom(seed, profile), spec.plane.value, frozenset(phi))

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(first_seed, first_seed + count)))


@dataclass
class Site:
    owner: Settings
    model: str
    uri: str
    inference: ServiceProcess
    monitor: ServiceProcess
    tmp: Path

    def predict(self, study: Study) -> str:
        body = {"instances": [{"b64": base64.b64encode(study.dicom).decode()}]}
        url = f"{self.inference.url}/v1/models/{self.model}:predict"
        response = httpx.post(url, json=body, timeout=60)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        return str(prediction["prediction_id"])

    def observed(self) -> int:
        with session_scope(create_engine_for(self.owner.database_url)) as session:
            count = session.scalar(
                select(func.count()).where(ObservedPrediction.model_name == self.model)
            )
        return int(count or 0)

    def windows(self) -> list[tuple[str, int, int, float, bool, int]]:
        with session_scope(create_engine_for(self.owner.database_url)) as session:
            return described(
                session.scalars(select(DriftWindow).where(DriftWindow.model_name == self.model))
            )


def described(windows: Any) -> list[tuple[str, int, int, float, bool, int]]:
    return sorted(
        (w.segment, w.number, w.size, round(w.p_value, 9), w.fired, w.episode) for w in windows
    )


@pytest.fixture(scope="module")
def site(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("monitor-site")
    owner = stack_settings(None)
    topics = private_topics(owner.kafka_bootstrap_servers, partitions=1)  # one arrival order
    owner = owner.model_copy(update={"topics": topics})
    upgrade(owner.database_url)
    model = f"planes-{uuid.uuid4().hex[:8]}"
    store = open_store(owner)
    uri = build_version(tmp, model, 1, seed=1).upload(store, owner.buckets.models, f"{model}/v1/")

    def env(service: str) -> dict[str, str]:
        return settings_env(stack_settings(service).model_copy(update={"topics": topics}))

    inference = ServiceProcess(
        "inference",
        env("inference")
        | {"FETALMLOPS_INFERENCE_MODEL_URI": uri, "FETALMLOPS_INFERENCE_ENERGY_WINDOW_S": "5"},
        tmp / "inference.log",
    )
    monitor = ServiceProcess(
        "monitor",
        env("monitor") | {"FETALMLOPS_MONITOR_CALIBRATION_WINDOWS": "80"},
        tmp / "monitor.log",
    )
    inference.start(timeout_s=90)
    try:
        yield Site(owner, model, uri, inference, monitor, tmp)
    finally:
        monitor.stop()
        inference.stop()
        for info in list(store.list(owner.buckets.models, f"{model}/")):
            store.delete(owner.buckets.models, info.key)


def drift_reference(events: list[predictions_pb2.PredictionMade]) -> dict[str, Any]:
    """The reference document the trainer writes, measured through the served model."""
    probabilities = np.array([[e.probabilities[c] for c in CLASSES] for e in events])
    predicted = probabilities.argmax(axis=1)
    return {
        "classes": CLASSES,
        "class_prior": (np.bincount(predicted, minlength=len(CLASSES)) / len(events)).tolist(),
        "label_prior": [],
        "confidence_histogram": {},
        "confidence_mean": float(probabilities.max(axis=1).mean()),
        "image_stats": {},
        "embedding": {
            "dim": len(events[0].embedding_summary),
            "sample": [list(e.embedding_summary) for e in events],
        },
        "n": len(events),
        "sample": {
            "probabilities": probabilities.tolist(),
            "image_stats": {
                name: [getattr(e.image_statistics, name) for e in events] for name in STATISTICS
            },
        },
    }


def predictions_on(owner: Settings) -> list[predictions_pb2.PredictionMade]:
    records = from_beginning(owner, [owner.topics.predictions])
    return [predictions_pb2.PredictionMade.FromString(r.value) for r in records]


@pytest.fixture(scope="module")
def watched(site: Site) -> dict[str, Any]:
    """The whole run: reference, version announced, monitor started, the stream with a kill."""
    reference = studies(10_000, REFERENCE, "highend-a")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(site.predict, reference))
    wait_for(lambda: len(predictions_on(site.owner)) >= REFERENCE, 60, "the reference predictions")
    document = drift_reference(predictions_on(site.owner))
    store = open_store(site.owner)
    prefix = f"{site.model}/v1/"
    store.put(
        site.owner.buckets.models, prefix + "drift_reference.json", json.dumps(document).encode()
    )
    bus = KafkaBus(site.owner.kafka_bootstrap_servers)
    trained = models_pb2.ModelTrained(
        model_name=site.model,
        version=1,
        storage_uri=site.uri,
        energy_kwh=0.012,
        emissions_kg_co2e=0.0007,
    )
    publish_event(bus, site.owner.topics.models_trained, site.model, trained, "registry-test")

    site.monitor.start(timeout_s=90)
    live = studies(20_000, STEADY, "highend-a") + studies(30_000, SHIFTED, "portable")
    killed = threading.Event()

    def kill_midway() -> None:
        wait_for(
            lambda: site.observed() >= REFERENCE + STEADY + SHIFTED // 3,
            300,
            "a third of the shift",
        )
        site.monitor.stop(signal.SIGKILL)
        killed.set()
        time.sleep(2)
        site.monitor.start(timeout_s=90)

    killer = threading.Thread(target=kill_midway)
    killer.start()
    feedback = []
    for index, study in enumerate(live):
        prediction_id = site.predict(study)
        if index % 2 == 0:
            feedback.append((prediction_id, study.plane))
    for prediction_id, plane in feedback:
        event = feedback_pb2.FeedbackGiven(
            prediction_id=prediction_id, true_plane=plane_to_proto(plane), reviewer="reviewer-1"
        )
        publish_event(bus, site.owner.topics.feedback, prediction_id, event, "clinic-test")
    bus.close()
    killer.join(600)
    assert killed.is_set()
    total = REFERENCE + STEADY + SHIFTED
    wait_for(lambda: site.observed() >= total, 300, "every prediction observed")
    return {"studies": reference + live, "feedback": len(feedback)}


def test_the_scanner_change_raises_one_alarm_and_one_training_request(
    site: Site, watched: dict[str, Any]
) -> None:
    windows = site.windows()
    high_end = [w for w in windows if w[0] == HIGH_END]
    portable = [w for w in windows if w[0] == PORTABLE]
    assert len(high_end) == (REFERENCE + STEADY) // 50 and len(portable) == SHIFTED // 50
    assert not any(fired for *_, fired, _ in high_end)
    fired_at = [number for _, number, _, _, fired, _ in portable if fired]
    assert len(fired_at) == 1 and fired_at[0] * 50 <= 200, portable

    records = from_beginning(site.owner, [site.owner.topics.training_requested])
    (record,) = records
    request = training_pb2.TrainingRequested.FromString(record.value)
    assert request.reason == "drift" and request.model_name == site.model
    assert request.drift.segment == PORTABLE and request.drift.window == fired_at[0]
    assert any(key == "traceparent" for key, _ in record.headers)

    status, metrics = get_text(f"{site.monitor.url}/metrics")
    alarm = (
        f'fetalmlops_drift_alarm{{model="{site.model}",model_version="1",segment="{PORTABLE}"}} 1.0'
    )
    assert status == 200 and alarm in metrics


def test_a_sigkilled_monitor_reports_what_an_uninterrupted_one_does(
    site: Site, watched: dict[str, Any], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/replay.db"
    upgrade(url)
    own = MonitorSettings(calibration_windows=80)
    clean = Monitor(
        site.owner,
        own,
        Clients(open_store(site.owner), create_engine_for(url), EmbeddedBus(partitions=1)),
    )
    topics = site.owner.topics
    for record in from_beginning(site.owner, [topics.models_trained]):
        clean.on_model(as_record(record))
    for record in from_beginning(site.owner, [topics.predictions]):
        clean.on_prediction(as_record(record))
    with session_scope(clean.engine) as session:
        assert described(session.scalars(select(DriftWindow))) == site.windows()
        (recorded,) = session.scalars(select(RetrainingRequest)).all()
    with session_scope(create_engine_for(site.owner.database_url)) as session:
        (request,) = session.scalars(
            select(RetrainingRequest).where(RetrainingRequest.model_name == site.model)
        ).all()
        assert request.request_id == recorded.request_id and request.published_at is not None


def test_reports_show_feedback_and_carbon_and_no_channel_holds_phi(
    site: Site, watched: dict[str, Any]
) -> None:
    wait_for(lambda: performance(site) is not None, 120, "the feedback joined")
    found = performance(site)
    assert found is not None and found["feedback"] == watched["feedback"]
    status, summary = get_text(f"{site.monitor.url}/v1/reports")
    assert status == 200
    (run,) = [
        r for r in json.loads(summary)["carbon"]["training_runs"] if r["model_name"] == site.model
    ]
    assert run["energy_kwh"] == pytest.approx(0.012)
    total = REFERENCE + STEADY + SHIFTED
    wait_for(lambda: served(site) >= total, 120, "every prediction's energy accounted")
    (serving,) = [f for f in carbon(site) if f["model_name"] == site.model]
    assert serving["predictions"] == total and serving["kwh_per_1000"] > 0
    assert serving["methods"] and all("CPU" in method for method in serving["methods"])
    print(
        f"\ncarbon per 1,000 inferences: {serving['kwh_per_1000']:.3g} kWh, "
        f"{serving['g_co2e_per_1000']:.3g} g CO2e at {serving['carbon_intensity_g_per_kwh']} "
        f"g/kWh, over {serving['windows']} windows; method: {'; '.join(serving['methods'])}"
    )
    _, page = get_text(f"{site.monitor.url}/dashboard")
    _, metrics = get_text(f"{site.monitor.url}/metrics")

    phi = set().union(*(study.phi for study in watched["studies"]))
    with session_scope(create_engine_for(site.owner.database_url)) as session:
        rows = [
            json.dumps(vars(row), default=str)
            for table in (ObservedPrediction, DriftWindow, RetrainingRequest, MonitoredVersion)
            for row in session.scalars(select(table).where(table.model_name == site.model))
        ]
        rows += [json.dumps(vars(e), default=str) for e in entries(session, f"model:{site.model}:")]
    assert any('"drift alarm"' in row for row in rows)  # the alarm's audit entry is scanned too
    channels = [site.monitor.log.read_bytes(), summary.encode(), page.encode(), metrics.encode(),
                "\n".join(rows).encode()]  # fmt: skip
    assert hits(phi, channels) == set()


def carbon(site: Site) -> list[dict[str, Any]]:
    _, body = get_text(f"{site.monitor.url}/v1/reports/carbon")
    found: list[dict[str, Any]] = json.loads(body)["per_1000_inferences"]
    return found


def served(site: Site) -> int:
    return sum(f["predictions"] for f in carbon(site) if f["model_name"] == site.model)


def performance(site: Site) -> dict[str, Any] | None:
    status, body = get_text(f"{site.monitor.url}/v1/reports/performance/{site.model}/1")
    return json.loads(body) if status == 200 else None


def get_text(url: str) -> tuple[int, str]:
    response = httpx.get(url, timeout=60)
    return response.status_code, response.text


def as_record(record: Any) -> Record:
    """A kafka-python record as the bus's own `Record`."""
    return Record(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=None if record.key is None else record.key.decode(),
        value=record.value,
        headers=tuple(record.headers),
    )
