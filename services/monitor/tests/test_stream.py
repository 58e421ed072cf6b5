"""The monitor's consumers on the embedded stack: a version watched from its drift reference,
predictions cut into windows, an alarm when the scanner changes, exactly one retraining request
per episode, replays that change nothing, and feedback kept for performance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from fetalmlops.common.bus import Rejected
from fetalmlops.common.db import (
    DriftWindow,
    Feedback,
    MonitoredVersion,
    ObservedPrediction,
    RetrainingRequest,
    session_scope,
)
from fetalmlops.common.db.audit import entries, verify
from fetalmlops.common.planes import Plane
from fetalmlops.monitor import reports
from fetalmlops.monitor.stream import Monitor
from fetalmlops.v1 import feedback_pb2, labels_pb2, predictions_pb2

from .served import (
    MODEL,
    STATISTICS,
    WINDOW,
    count,
    drift_reference,
    monitor_at,
    predictions,
    records,
    requested,
    rows,
    stream,
    trained,
)


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    return drift_reference()


def test_a_scanner_change_raises_one_alarm_and_one_request(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference)
    trained(monitor)
    steady = predictions(20 * WINDOW, seed=1)
    shifted = predictions(10 * WINDOW, seed=2, brightness=0.08)
    stream(monitor, steady)
    assert count(monitor, RetrainingRequest) == 0  # 20 windows of the reference's scanner

    stream(monitor, shifted)
    with session_scope(monitor.engine) as session:
        windows = session.scalars(select(DriftWindow).order_by(DriftWindow.number)).all()
        first_alarm = next(w.number for w in windows if w.fired)
        assert [w.number for w in windows] == list(range(1, 31))
        assert sum(w.fired for w in windows) == 1
        assert windows[-1].alarm_active  # the shift persists: one long episode
    delay = (first_alarm - 20) * WINDOW
    assert delay <= 200, f"{delay} predictions after the change"
    (request,) = requested(monitor)
    assert request.reason == "drift" and request.model_name == MODEL
    assert request.drift.model_version == 1 and request.drift.segment == "Sonora/X9"
    assert request.drift.episode == 1 and request.drift.window == first_alarm
    assert request.drift.test and request.drift.cusum >= request.drift.threshold > 0
    with session_scope(monitor.engine) as session:
        (alarm,) = entries(session, f"model:{MODEL}:v1")
        assert (alarm.actor, alarm.action) == ("monitor", "drift alarm")
        assert alarm.details["retraining_request"] == request.request_id
        assert (
            alarm.details["window"] == first_alarm and alarm.details["test"] == request.drift.test
        )
        assert verify(entries(session)) == []

    stream(monitor, steady + shifted)  # a replay of everything: nothing new
    assert count(monitor, ObservedPrediction) == 30 * WINDOW
    assert count(monitor, DriftWindow) == 30
    assert requested(monitor) == [request]


def test_a_batch_keeps_what_one_record_at_a_time_keeps(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    alone, batched = (monitor_at(tmp_path / name, reference) for name in ("alone", "batched"))
    events = predictions(3 * WINDOW + 10, seed=7) + predictions(3 * WINDOW, seed=8, brightness=0.08)
    read = records(alone.settings.topics.predictions, [(e.request_id, e) for e in events])
    for monitor in (alone, batched):
        trained(monitor)
    for record in read:
        alone.on_prediction(record)
    for start in range(0, len(read), 37):  # each batch repeats two records, as a replay may
        batched.on_predictions([*read[start : start + 37], *read[start : start + 2]])

    def kept(monitor: Monitor) -> list[tuple[int, int, float, bool, int]]:
        with session_scope(monitor.engine) as session:
            windows = session.scalars(select(DriftWindow).order_by(DriftWindow.number))
            return [(w.number, w.size, w.p_value, w.fired, w.episode) for w in windows]

    assert kept(batched) == kept(alone) and len(kept(alone)) == 6
    assert count(batched, ObservedPrediction) == len(events)

    def asked(monitor: Monitor) -> list[tuple[str, object]]:
        return [(r.request_id, r.drift) for r in requested(monitor)]

    assert asked(batched) == asked(alone) != []


def test_predictions_before_their_version_are_windowed_once_it_is_known(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference)
    stream(monitor, predictions(3 * WINDOW + 7, seed=3))
    assert count(monitor, DriftWindow) == 0
    trained(monitor)
    assert count(monitor, DriftWindow) == 3
    with session_scope(monitor.engine) as session:
        version = session.get(MonitoredVersion, (MODEL, 1))
        assert version is not None and version.alarm_rule is not None
        assert version.energy_kwh == pytest.approx(0.2)
        left = session.scalar(select(func.count()).where(ObservedPrediction.window_id.is_(None)))
        assert left == 7


def test_a_quiet_scanner_is_windowed_by_time_too(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference, window_seconds=3600)
    trained(monitor)
    events = predictions(WINDOW + 5, seed=6)
    start = datetime(2026, 12, 1, 8, tzinfo=UTC)
    # Four in the first hour, then the fifth an hour and a minute after the first: the four
    # make a window. The next WINDOW arrive within an hour of the fifth: a full window.
    minutes = [0, 10, 20, 30] + [61 + i for i in range(WINDOW + 1)]
    for event, minute in zip(events, minutes, strict=True):
        event.meta.event_id = event.prediction_id
        event.meta.occurred_at.FromDatetime(start + timedelta(minutes=minute))
    stream(monitor, events)
    stream(monitor, events)  # a replay cuts nothing new
    with session_scope(monitor.engine) as session:
        windows = session.scalars(select(DriftWindow).order_by(DriftWindow.number)).all()
        assert [(w.number, w.size) for w in windows] == [(1, 4), (2, WINDOW)]
        assert windows[0].last_at - windows[0].first_at == timedelta(minutes=30)
        left = session.scalar(select(func.count()).where(ObservedPrediction.window_id.is_(None)))
        assert left == 1


def test_with_auto_retraining_off_an_alarm_is_a_recommendation(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference, auto_retrain=False)
    trained(monitor)
    stream(monitor, predictions(8 * WINDOW, seed=4, brightness=0.1))
    with session_scope(monitor.engine) as session:
        (recommended,) = session.scalars(select(RetrainingRequest)).all()
        assert not recommended.automatic and recommended.published_at is None
    assert requested(monitor) == []


def test_feedback_is_kept_and_corrected_and_nonsense_is_rejected(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference)
    topic = monitor.settings.topics.feedback
    first = feedback_pb2.FeedbackGiven(
        prediction_id="p-1", true_plane=labels_pb2.PLANE_FETAL_FEMUR, reviewer="r1"
    )
    corrected = feedback_pb2.FeedbackGiven(
        prediction_id="p-1", true_plane=labels_pb2.PLANE_FETAL_BRAIN, reviewer="r2"
    )
    for record in records(topic, [("p-1", first), ("p-1", corrected)]):
        monitor.on_feedback(record)
    with session_scope(monitor.engine) as session:
        (kept,) = session.scalars(select(Feedback)).all()
        assert (kept.true_plane, kept.reviewer) == (Plane.FETAL_BRAIN, "r2")
    (nonsense,) = records(topic, [("p-2", feedback_pb2.FeedbackGiven(prediction_id="p-2"))])
    with pytest.raises(Rejected, match="no plane"):
        monitor.on_feedback(nonsense)


def test_energy_accounts_become_carbon_per_1000_inferences(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference)
    topic = monitor.settings.topics.inference_energy
    windows = []
    for n, (joules, served) in enumerate([(3600.0, 400), (1800.0, 100)]):
        account = predictions_pb2.InferenceEnergy(
            account_id=f"pod-a/{n}", model_name=MODEL, model_version=1, compute_device="cpu",
            energy_joules=joules, requests=served, predictions=served,
            method="CPU estimated from CPU load × TDP",
        )  # fmt: skip
        windows.append((account.account_id, account))
    for record in records(topic, windows + windows):  # each window delivered twice
        monitor.on_energy(record)
    with session_scope(monitor.engine) as session:
        (footprint,) = reports.carbon(session, 50.0)["per_1000_inferences"]
    # 5400 J = 1.5 Wh over 500 predictions: 3 Wh, 0.15 g CO2e per 1,000 at 50 g/kWh.
    assert footprint["kwh_per_1000"] == pytest.approx(0.003)
    assert footprint["g_co2e_per_1000"] == pytest.approx(0.15)
    assert footprint["methods"] == ["CPU estimated from CPU load × TDP"]
    (negative,) = records(
        topic, [("x", predictions_pb2.InferenceEnergy(account_id="x", energy_joules=-1))]
    )
    with pytest.raises(Rejected, match="negative"):
        monitor.on_energy(negative)


def test_a_prediction_naming_nothing_is_rejected_and_nothing_kept(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    monitor = monitor_at(tmp_path, reference)
    topic = monitor.settings.topics.predictions
    (nameless,) = records(topic, [("r", predictions_pb2.PredictionMade(request_id="r"))])
    with pytest.raises(Rejected, match="no prediction id or no model"):
        monitor.on_prediction(nameless)
    assert count(monitor, ObservedPrediction) == 0


def test_a_scanner_is_compared_with_its_own_rows_of_a_mixed_reference(tmp_path: Path) -> None:
    """A version trained on two scanners: one scanner's predictions alone differ from the mixed
    reference, so each is compared with its own rows and neither raises an alarm; a scanner the
    reference never saw is compared with all of it, and does."""
    mixed = drift_reference()
    dark = rows(256, np.random.default_rng(1), brightness=0.12)
    sample = mixed["sample"]
    sample["probabilities"] += dark["probabilities"].tolist()
    for i, name in enumerate(STATISTICS):
        sample["image_stats"][name] += dark["statistics"][:, i].tolist()
    sample["segments"] = ["Sonora/X9"] * 256 + ["Pocket/C3"] * 256
    mixed["embedding"]["sample"] += dark["embeddings"].tolist()
    monitor = monitor_at(tmp_path, mixed)
    trained(monitor)
    stream(monitor, predictions(8 * WINDOW, seed=5, scanner="Sonora/X9"))
    stream(monitor, predictions(8 * WINDOW, seed=6, scanner="Pocket/C3", brightness=0.12))
    assert count(monitor, RetrainingRequest) == 0
    stream(monitor, predictions(8 * WINDOW, seed=7, scanner="Other/Z1", brightness=0.12))
    (request,) = requested(monitor)
    assert request.drift.segment == "Other/Z1"
