"""Rollouts on the embedded stack: a challenger that passed the gate goes to shadow, canary and
production, or back, by the plan's rules; each move is a `fetal.models.rollout` state, published
once, and an audit entry; approvals need the scope and a name the plan lists; replays change
nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from fetalmlops.changecontrol.plan import ChangeControlPlan, PlanError, PlanFile, parse_plan
from fetalmlops.common.bus import read_event
from fetalmlops.common.db import Rollout, RolloutPhase, session_scope
from fetalmlops.common.db.audit import entries, verify
from fetalmlops.common.planes import Plane
from fetalmlops.monitor.api import add_routes
from fetalmlops.monitor.release import MIN_EVIDENCE
from fetalmlops.monitor.rollouts import Rollouts
from fetalmlops.monitor.settings import MonitorSettings
from fetalmlops.monitor.stream import Monitor
from fetalmlops.v1 import feedback_pb2, models_pb2, predictions_pb2

from .served import MODEL, drift_reference, monitor_at, predictions, records, stream

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy/change-control/plan.yaml"
SHADOW, CANARY, FEEDBACK = 40, 40, 30
PLANES = [plane.value for plane in Plane]


def plan(approval: bool) -> ChangeControlPlan:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["rollout"] |= {
        "shadow_min_predictions": SHADOW, "min_predictions": CANARY, "min_feedback": FEEDBACK,
    }  # fmt: skip
    document["approval"]["required"] = approval
    return parse_plan(yaml.safe_dump(document), "test plan")


def monitor_with(tmp_path: Path, approval: bool = False) -> Monitor:
    monitor = monitor_at(tmp_path, drift_reference(), rollout_review_seconds=0)
    monitor.rollouts = Rollouts(monitor.settings, PlanFile.fixed(plan(approval)), monitor.clients)
    return monitor


def gate_passed(monitor: Monitor, version: int = 2, champion: int = 1) -> None:
    event = models_pb2.ModelTrained(
        model_name=MODEL, version=version, storage_uri=f"s3://fetal-models/{MODEL}/v{version}/",
        gate=models_pb2.GateVerdict(passed=True, champion_version=champion),
    )  # fmt: skip
    for record in records(monitor.settings.topics.models_trained, [(MODEL, event)]):
        monitor.on_model(record)


def served(n: int, seed: int, arm: int, version: int, agree: bool = True) -> list[Any]:
    """``n`` answered predictions of ``arm``; with `ARM_SHADOW`, each answer's shadow too
    (agreeing with it, or naming the next plane)."""
    events = []
    for event in predictions(
        n, seed=seed, version=1 if arm == predictions_pb2.ARM_SHADOW else version
    ):
        if arm == predictions_pb2.ARM_SHADOW:
            event.arm = predictions_pb2.ARM_CHAMPION
            shadow = predictions_pb2.PredictionMade()
            shadow.CopyFrom(event)
            shadow.prediction_id, shadow.shadow_of = (
                event.prediction_id + "-shadow",
                event.prediction_id,
            )
            shadow.model_version, shadow.arm = version, predictions_pb2.ARM_SHADOW
            if not agree:
                shadow.predicted_plane = PLANES[(PLANES.index(event.predicted_plane) + 1) % 6]
            events += [event, shadow]
        else:
            event.arm = arm
            events.append(event)
    return events


def feedback(monitor: Monitor, events: list[Any], right: bool = True) -> None:
    given = []
    for event in events:
        if event.arm == predictions_pb2.ARM_SHADOW:
            continue
        plane = (
            PLANES.index(event.predicted_plane)
            if right
            else (PLANES.index(event.predicted_plane) + 1) % 6
        )
        given.append(
            (event.prediction_id,
             feedback_pb2.FeedbackGiven(prediction_id=event.prediction_id, true_plane=plane + 1,
                                        reviewer="r1"))
        )  # fmt: skip
    for record in records(monitor.settings.topics.feedback, given):
        monitor.on_feedback(record)


def states(monitor: Monitor) -> list[models_pb2.RolloutChanged]:
    subscription = monitor.clients.bus.subscribe([monitor.settings.topics.models_rollout], "check")
    found = []
    while batch := subscription.poll(0.05):
        found.extend(read_event(record) for record in batch)
    subscription.close()
    return found  # type: ignore[return-value]


def phase(monitor: Monitor, version: int = 2) -> RolloutPhase:
    with session_scope(monitor.engine) as session:
        rollout = session.scalars(
            select(Rollout).where(Rollout.challenger_version == version)
        ).one()
        return rollout.phase


def test_a_good_challenger_goes_from_shadow_through_canary_to_production(tmp_path: Path) -> None:
    monitor = monitor_with(tmp_path)
    gate_passed(monitor)
    (shadow_state,) = states(monitor)
    assert shadow_state.mode == models_pb2.ROLLOUT_MODE_SHADOW
    assert (shadow_state.champion_version, shadow_state.challenger_version) == (1, 2)
    assert shadow_state.challenger_storage_uri == f"s3://fetal-models/{MODEL}/v2/"

    stream(monitor, served(SHADOW, seed=1, arm=predictions_pb2.ARM_SHADOW, version=2))
    assert phase(monitor) is RolloutPhase.CANARY
    canary_state = states(monitor)[-1]
    assert canary_state.mode == models_pb2.ROLLOUT_MODE_CANARY
    assert canary_state.canary_fraction == pytest.approx(0.1)
    assert canary_state.sequence > shadow_state.sequence

    answered = served(CANARY, seed=2, arm=predictions_pb2.ARM_CHALLENGER, version=2)
    stream(monitor, answered)
    assert phase(monitor) is RolloutPhase.CANARY  # no feedback yet
    champion = served(MIN_EVIDENCE, seed=3, arm=predictions_pb2.ARM_CHAMPION, version=1)
    stream(monitor, champion)
    feedback(monitor, champion)
    feedback(monitor, answered[:FEEDBACK])
    assert phase(monitor) is RolloutPhase.PROMOTED
    promoted = states(monitor)[-1]
    assert (promoted.champion_version, promoted.challenger_version) == (2, 0)
    assert promoted.mode == models_pb2.ROLLOUT_MODE_UNSPECIFIED
    assert promoted.champion_storage_uri == f"s3://fetal-models/{MODEL}/v2/"

    with session_scope(monitor.engine) as session:
        trail = entries(session, f"model:{MODEL}:v2")
        assert [e.action for e in trail] == [
            "rollout started", "rollout: canary", "rollout: promote",
        ]  # fmt: skip
        assert trail[-1].details["arms"]["canary_feedback"] == FEEDBACK
        assert trail[1].details["arms"]["paired"] == SHADOW
        assert verify(entries(session)) == []
    published = len(states(monitor))
    gate_passed(monitor)  # replays: no second rollout, no state published again
    stream(monitor, answered)
    feedback(monitor, champion)
    assert len(states(monitor)) == published


def test_a_challenger_the_shadow_shows_disagreeing_is_rolled_back(tmp_path: Path) -> None:
    monitor = monitor_with(tmp_path)
    gate_passed(monitor)
    stream(
        monitor,
        served(MIN_EVIDENCE, seed=1, arm=predictions_pb2.ARM_SHADOW, version=2, agree=False),
    )
    assert phase(monitor) is RolloutPhase.ROLLED_BACK
    rolled_back = states(monitor)[-1]
    assert (rolled_back.champion_version, rolled_back.challenger_version) == (1, 0)
    assert rolled_back.mode == models_pb2.ROLLOUT_MODE_UNSPECIFIED
    assert "disagree" in rolled_back.reason


def test_a_canary_worse_on_feedback_is_rolled_back(tmp_path: Path) -> None:
    monitor = monitor_with(tmp_path)
    gate_passed(monitor)
    stream(monitor, served(SHADOW, seed=1, arm=predictions_pb2.ARM_SHADOW, version=2))
    champion = served(MIN_EVIDENCE, seed=3, arm=predictions_pb2.ARM_CHAMPION, version=1)
    answered = served(MIN_EVIDENCE, seed=2, arm=predictions_pb2.ARM_CHALLENGER, version=2)
    stream(monitor, champion + answered)
    feedback(monitor, champion)
    feedback(monitor, answered, right=False)
    assert phase(monitor) is RolloutPhase.ROLLED_BACK
    assert "macro-F1" in states(monitor)[-1].reason


def test_a_plan_that_requires_approval_promotes_only_when_every_approver_signed(
    tmp_path: Path,
) -> None:
    monitor = monitor_with(tmp_path, approval=True)
    own = MonitorSettings(tokens={"reader": ["reports:read"], "lead": ["models:approve"]})
    app = FastAPI()
    add_routes(app, monitor.engine, own, monitor.rollouts)
    client = TestClient(app)
    gate_passed(monitor)
    stream(monitor, served(SHADOW, seed=1, arm=predictions_pb2.ARM_SHADOW, version=2))
    champion = served(MIN_EVIDENCE, seed=3, arm=predictions_pb2.ARM_CHAMPION, version=1)
    answered = served(CANARY, seed=2, arm=predictions_pb2.ARM_CHALLENGER, version=2)
    stream(monitor, champion + answered)
    feedback(monitor, champion + answered)
    assert phase(monitor) is RolloutPhase.AWAITING_APPROVAL

    url = f"/v1/models/{MODEL}/versions/2/approvals"
    body = {"by": "clinical-lead", "reason": "canary figures reviewed"}
    unscoped = client.post(url, json=body, headers={"Authorization": "Bearer reader"})
    assert unscoped.status_code == 403 and "models:approve" in unscoped.json()["detail"]
    stranger = client.post(
        url, json=body | {"by": "intern"}, headers={"Authorization": "Bearer lead"}
    )
    assert stranger.status_code == 403
    assert client.post(url, json=body).status_code == 401
    assert phase(monitor) is RolloutPhase.AWAITING_APPROVAL

    first = client.post(url, json=body, headers={"Authorization": "Bearer lead"})
    assert first.status_code == 200 and first.json()["phase"] == "awaiting_approval"
    assert states(monitor)[-1].mode == models_pb2.ROLLOUT_MODE_CANARY  # the canary goes on
    second = client.post(
        url,
        json={"by": "ml-lead", "reason": "latency fine"},
        headers={"Authorization": "Bearer lead"},
    )
    assert second.json()["phase"] == "promoted"
    assert second.json()["approvers"] == ["clinical-lead", "ml-lead"]
    assert states(monitor)[-1].champion_version == 2
    late = client.post(url, json=body, headers={"Authorization": "Bearer lead"})
    assert late.status_code == 409

    with session_scope(monitor.engine) as session:
        actions = [(e.actor, e.action) for e in entries(session, f"model:{MODEL}:v2")]
    assert actions.count(("monitor", "approval refused")) == 3  # scope, stranger, too late
    assert ("person:clinical-lead", "approved") in actions
    assert ("person:ml-lead", "approved") in actions
    listed = client.get("/v1/rollouts", headers={"Authorization": "Bearer reader"}).json()
    assert [r["phase"] for r in listed] == ["promoted"]


def test_a_newer_challenger_supersedes_one_in_rollout(tmp_path: Path) -> None:
    monitor = monitor_with(tmp_path)
    gate_passed(monitor, version=2)
    gate_passed(monitor, version=3)
    assert phase(monitor, 2) is RolloutPhase.ROLLED_BACK
    assert phase(monitor, 3) is RolloutPhase.SHADOW
    latest = states(monitor)[-1]
    assert (latest.challenger_version, latest.mode) == (3, models_pb2.ROLLOUT_MODE_SHADOW)


def test_a_plan_written_after_the_start_governs_the_first_rollout(tmp_path: Path) -> None:
    """A platform starts before the sequestered set its plan fixes exists: predictions flow
    meanwhile, a gate's verdict waits (retried, then dead-lettered with the reason), and the
    plan once written is read and kept."""
    monitor = monitor_at(tmp_path, drift_reference(), rollout_review_seconds=0)
    later = tmp_path / "plan.yaml"
    monitor.rollouts = Rollouts(monitor.settings, PlanFile.at(later), monitor.clients)
    stream(monitor, served(10, seed=1, arm=predictions_pb2.ARM_CHAMPION, version=1))
    with pytest.raises(PlanError, match=r"plan.yaml(?s:.*)cannot be read"):
        gate_passed(monitor)
    later.write_text(yaml.safe_dump(plan(approval=False).model_dump(mode="json")))
    gate_passed(monitor)
    assert phase(monitor) is RolloutPhase.SHADOW
    later.write_text("not: a plan")  # a running service never changes plans
    stream(monitor, served(SHADOW, seed=2, arm=predictions_pb2.ARM_SHADOW, version=2))
    assert phase(monitor) is RolloutPhase.CANARY
