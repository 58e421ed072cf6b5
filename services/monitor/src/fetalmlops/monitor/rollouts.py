"""Rollouts under the change-control plan: a challenger that passed the gate goes to shadow, then
canary, then production, or back, as `release.next_step` decides from the arms' figures.

The monitor keeps one `Rollout` row per challenger and is the only writer of the serving state
on `fetal.models.rollout`: each change of phase bumps the row's ``sequence`` in the same
transaction as its audit entry, and the state is published after the commit (an outbox:
``published_sequence`` trails ``sequence`` until it is out, and a crash in between publishes it
on the next event). Promotion and rollback are serving states too (the challenger as champion
alone, or the champion alone); the registry follows them (the trainer's `fetal.models.rollout`
consumer) to set the versions' stages and announce the promotion.

The arms are read from the monitor's own rows: each prediction names its arm; a shadow's truth
is the feedback on the champion's answer of the same image (``shadow_of``), so in shadow both
arms are scored on the very same images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fetalmlops.changecontrol.plan import ChangeControlPlan, PlanError, PlanFile, plan_digest
from fetalmlops.common import model_version
from fetalmlops.common.bus import publish_event
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import (
    Approval,
    Feedback,
    ObservedPrediction,
    Rollout,
    RolloutPhase,
    session_scope,
)
from fetalmlops.common.db.audit import append
from fetalmlops.common.db.columns import utcnow
from fetalmlops.common.settings import Settings
from fetalmlops.monitor.release import (
    Action,
    Comparison,
    Seen,
    Standing,
    Step,
    figures,
    first_phase,
    next_step,
)
from fetalmlops.monitor.settings import SERVICE_NAME
from fetalmlops.v1 import models_pb2

log = logging.getLogger(__name__)
ACTIVE = [phase for phase in RolloutPhase if phase.active]
MODES = {
    RolloutPhase.SHADOW: models_pb2.ROLLOUT_MODE_SHADOW,
    RolloutPhase.CANARY: models_pb2.ROLLOUT_MODE_CANARY,
    RolloutPhase.AWAITING_APPROVAL: models_pb2.ROLLOUT_MODE_CANARY,
}


class ApprovalRefused(Exception):
    """An approval that cannot be taken; ``status`` is its HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Rollouts:
    settings: Settings
    plans: PlanFile  # read when first needed: the platform may start before it is written
    clients: Clients

    @property
    def plan(self) -> ChangeControlPlan:
        """The plan in force; PlanError while its file is missing or not valid."""
        return self.plans.load()

    @property
    def digest(self) -> str:
        return plan_digest(self.plan)

    def governed(self) -> str | None:
        """The model the plan governs; None (and a warning) while there is no plan to read:
        then no rollout has started in this process, and predictions are not held up."""
        if not self.plans.written:
            return None
        try:
            return self.plan.model
        except PlanError as exc:
            log.warning("no change-control plan to review rollouts by", extra={"reason": str(exc)})
            return None

    # --- a challenger arrives ----------------------------------------------------------------

    def on_trained(self, event: models_pb2.ModelTrained) -> None:
        """Start the rollout of a version that passed the plan's gate (once: a replay finds
        it). A challenger still in rollout is superseded by the newer one. Without a plan to
        read, PlanError: the event is retried, then dead-lettered with the reason."""
        if event.model_name != self.plan.model or not event.gate.passed:
            return
        with session_scope(self.clients.engine) as session:
            if _rollout_of(session, event.model_name, event.version) is None:
                self.start(session, event)
        self.publish_pending()

    def start(self, session: Session, event: models_pb2.ModelTrained) -> None:
        previous = active(session, event.model_name)
        if previous is not None:
            self.move(session, previous, Step(Action.ROLL_BACK, f"superseded by v{event.version}"))
            session.flush()  # one active rollout per model: the index checks it
        champion = event.gate.champion_version
        phase = first_phase(self.plan.rollout) if champion else RolloutPhase.AWAITING_APPROVAL
        rollout = Rollout(
            model_name=event.model_name,
            champion_version=champion,
            challenger_version=event.version,
            phase=phase,
            plan_digest=self.digest,
            sequence=next_sequence(session, event.model_name),
            published_sequence=0,
            reason="passed the gate" if champion else "passed the gate; no champion yet",
            phase_started_at=utcnow(),
        )
        session.add(rollout)
        session.flush()
        self.audit(session, rollout, "rollout started", {"phase": phase.value})
        if not champion and not self.plan.approval.required:
            self.move(session, rollout, Step(Action.PROMOTE, "the first version: no champion"))

    # --- evidence arrives --------------------------------------------------------------------

    def review(self, model_name: str | None = None, now: datetime | None = None) -> None:
        """Apply `release.next_step` to the active rollout of ``model_name`` (default: the
        plan's model), if it has one."""
        governed = self.governed()
        if governed is None or model_name not in (None, governed):
            return
        model_name = governed
        with session_scope(self.clients.engine) as session:
            rollout = active(session, model_name)
            if rollout is not None:
                arms = comparison(session, rollout)
                standing = Standing(
                    rollout.phase, rollout.phase_started_at, approvers(session, rollout)
                )
                step = next_step(
                    self.plan.rollout, self.plan.approval, standing, arms, now or utcnow()
                )
                if step.phase is not None:
                    self.move(session, rollout, step, arms)
        self.publish_pending()  # also what a review that failed after its commit left

    def approve(self, model_name: str, version: int, by: str, reason: str) -> dict[str, Any]:
        """A named person's approval of a challenger in rollout; then the rollout is reviewed
        (the last approval promotes). Raises ApprovalRefused."""
        if by not in self.plan.approval.approvers:
            raise ApprovalRefused(403, f"{by!r} is not an approver this plan names")
        with session_scope(self.clients.engine) as session:
            rollout = _rollout_of(session, model_name, version)
            if rollout is None or not rollout.phase.active:
                raise ApprovalRefused(409, f"{model_name} v{version} is not in rollout")
            if by not in approvers(session, rollout):
                session.add(Approval(rollout_id=rollout.id, approver=by, reason=reason))
                append(session, f"person:{by}", "approved", _subject(rollout),
                       {"reason": reason, "plan_digest": rollout.plan_digest})  # fmt: skip
        self.review(model_name)
        with session_scope(self.clients.engine) as session:
            found = _rollout_of(session, model_name, version)
            assert found is not None
            return status(session, found)

    # --- the state -------------------------------------------------------------------------

    def move(
        self, session: Session, rollout: Rollout, step: Step, arms: Comparison | None = None
    ) -> None:
        phase = step.phase
        assert phase is not None
        rollout.phase, rollout.reason = phase, step.reason
        rollout.phase_started_at = utcnow()
        rollout.sequence = next_sequence(session, rollout.model_name)
        if not phase.active:
            rollout.ended_at = rollout.phase_started_at
        details: dict[str, Any] = {"phase": phase.value, "reason": step.reason}
        if arms is not None:
            details["arms"] = arms.to_dict()
        self.audit(session, rollout, f"rollout: {step.action.value}", details)
        log.info(
            "rollout moved",
            extra={"model": rollout.model_name, "model_version": rollout.challenger_version,
                   "phase": phase.value},
        )  # fmt: skip

    def audit(
        self, session: Session, rollout: Rollout, action: str, details: dict[str, Any]
    ) -> None:
        append(session, SERVICE_NAME, action, _subject(rollout), {
            "champion_version": rollout.champion_version,
            "challenger_version": rollout.challenger_version,
            "sequence": rollout.sequence,
            "plan_version": self.plan.plan_version,
            "plan_digest": rollout.plan_digest,
            "canary_fraction": self.plan.rollout.canary_fraction,
            **details,
        })  # fmt: skip

    def publish_pending(self) -> None:
        """Publish every state written and not yet published, in sequence order. The rows are
        locked while they are published, so a second publisher waits and then finds them
        published (not skipped: a row a reviewer merely waits on reads as locked too): each
        state goes out once, unless the process dies between publishing and marking it, when
        it goes out again under the same sequence, which the inference service skips."""
        with session_scope(self.clients.engine) as session:
            waiting = session.scalars(
                select(Rollout)
                .where(Rollout.published_sequence < Rollout.sequence)
                .order_by(Rollout.sequence)
                .with_for_update()
            ).all()
            for rollout in waiting:
                publish_event(
                    self.clients.bus,
                    self.settings.topics.models_rollout,
                    rollout.model_name,
                    self.state(rollout),
                    self.settings.service_name,
                )
                rollout.published_sequence = rollout.sequence

    def state(self, rollout: Rollout) -> models_pb2.RolloutChanged:
        """What the inference service must serve for this rollout's phase."""
        bucket, name = self.settings.buckets.models, rollout.model_name
        champion = rollout.champion_version
        if rollout.phase is RolloutPhase.PROMOTED:
            champion = rollout.challenger_version
        event = models_pb2.RolloutChanged(
            model_name=name,
            champion_version=champion,
            champion_storage_uri=model_version.storage_uri(bucket, name, champion)
            if champion
            else "",
            sequence=rollout.sequence,
            reason=rollout.reason,
        )
        mode = MODES.get(rollout.phase)
        if mode is not None and rollout.champion_version:
            event.challenger_version = rollout.challenger_version
            event.challenger_storage_uri = model_version.storage_uri(
                bucket, name, rollout.challenger_version
            )
            event.mode = mode
            if mode == models_pb2.ROLLOUT_MODE_CANARY:
                event.canary_fraction = self.plan.rollout.canary_fraction
        return event


def active(session: Session, model_name: str) -> Rollout | None:
    """The model's rollout in progress, locked until the transaction ends: predictions,
    feedback, approvals and new versions review it from threads of their own, and two that
    both saw a canary ready must not both promote it (on PostgreSQL the second waits, then
    finds the rollout ended; SQLite has one writer at a time)."""
    return session.scalars(
        select(Rollout)
        .where(Rollout.model_name == model_name, Rollout.phase.in_(ACTIVE))
        .with_for_update()
    ).one_or_none()


def next_sequence(session: Session, model_name: str) -> int:
    latest = session.scalar(
        select(func.max(Rollout.sequence)).where(Rollout.model_name == model_name)
    )
    return int(latest or 0) + 1


def approvers(session: Session, rollout: Rollout) -> frozenset[str]:
    return frozenset(
        session.scalars(select(Approval.approver).where(Approval.rollout_id == rollout.id))
    )


def comparison(session: Session, rollout: Rollout) -> Comparison:
    """The two arms since the rollout started, from the monitor's rows."""
    truth = Feedback.prediction_id == func.coalesce(
        ObservedPrediction.shadow_of, ObservedPrediction.prediction_id
    )
    rows = session.execute(
        select(ObservedPrediction, Feedback.true_plane)
        .outerjoin(Feedback, truth)
        .where(
            ObservedPrediction.model_name == rollout.model_name,
            ObservedPrediction.model_version.in_(
                [rollout.champion_version, rollout.challenger_version]
            ),
            ObservedPrediction.occurred_at >= rollout.started_at,
        )
    ).all()
    champion: list[Seen] = []
    shadow: list[Seen] = []
    canary: list[Seen] = []
    answered: dict[str, str] = {}
    shadows: list[tuple[str | None, str]] = []
    failures = 0
    for row, plane in rows:
        seen = Seen(
            row.predicted,
            max(row.probabilities.values(), default=0.0),
            row.latency_ms,
            None if plane is None else plane.value,
        )
        if row.model_version == rollout.champion_version and row.arm in ("champion", ""):
            champion.append(seen)
            answered[row.prediction_id] = row.predicted
            failures += row.challenger_failed
        elif row.model_version == rollout.challenger_version and row.arm == "shadow":
            shadow.append(seen)
            shadows.append((row.shadow_of, row.predicted))
        elif row.model_version == rollout.challenger_version and row.arm == "challenger":
            canary.append(seen)
    pairs = [(answered[of], plane) for of, plane in shadows if of in answered]
    return Comparison(
        champion=figures(champion),
        challenger=figures(shadow + canary, failures),
        shadow_predictions=len(shadow),
        canary_predictions=len(canary),
        canary_feedback=sum(seen.truth is not None for seen in canary),
        paired=len(pairs),
        disagreements=sum(a != b for a, b in pairs),
    )


def status(session: Session, rollout: Rollout) -> dict[str, Any]:
    """A rollout as the API and the CLI show it."""
    return {
        "model": rollout.model_name,
        "champion_version": rollout.champion_version,
        "challenger_version": rollout.challenger_version,
        "phase": rollout.phase.value,
        "reason": rollout.reason,
        "sequence": rollout.sequence,
        "plan_digest": rollout.plan_digest,
        "started_at": rollout.started_at.isoformat(),
        "phase_started_at": rollout.phase_started_at.isoformat(),
        "ended_at": rollout.ended_at.isoformat() if rollout.ended_at else None,
        "approvers": sorted(approvers(session, rollout)),
        "arms": comparison(session, rollout).to_dict(),
    }


def listing(session: Session, model_name: str | None = None) -> list[dict[str, Any]]:
    query = select(Rollout).order_by(Rollout.id)
    if model_name:
        query = query.where(Rollout.model_name == model_name)
    return [status(session, rollout) for rollout in session.scalars(query)]


def _rollout_of(session: Session, model_name: str, version: int) -> Rollout | None:
    return session.scalars(
        select(Rollout).where(
            Rollout.model_name == model_name, Rollout.challenger_version == version
        )
    ).one_or_none()


def _subject(rollout: Rollout) -> str:
    return f"model:{rollout.model_name}:v{rollout.challenger_version}"
