"""A rollout's next step under a change-control plan: pure.

A challenger that passed the gate meets live traffic in phases (`RolloutPhase`): shadow (it
scores every request, the champion answers), canary (it answers a fraction of requests), then
promotion, or a wait for the plan's approvers first. `next_step` reads where the rollout stands
and how the two arms compare (`Comparison`), and says what to do, with the reason in words for
the audit trail and the event. Its checks, in order:

1. **Stop rules**, in any phase: the challenger's feedback macro-F1 more than
   ``max_macro_f1_drop`` below the champion's, the arms disagreeing on more than
   ``max_disagreement`` of the images both scored, or more than ``max_error_rate`` of the
   challenger's runs failing: rolled back at once. Each is read only once it rests on
   `MIN_EVIDENCE` observations: one disagreement among the first three shadow predictions is
   33 %, and would roll back a good model on noise.
2. **Time**: a shadow or canary phase older than ``max_duration_hours`` without its minimums
   met is rolled back; a challenger that cannot show its worth in that time is not promoted by
   default.
3. **Shadow → canary** once the challenger made ``shadow_min_predictions`` shadow predictions.
4. **Canary → promotion** once it answered ``min_predictions`` requests' images and
   ``min_feedback`` of them have a clinician's plane, and its feedback macro-F1 is within
   ``max_macro_f1_drop`` of the champion's on the feedback gathered (else it is rolled back:
   the minimums are the evidence the plan asked for, fewer than the stop rule's); when the
   plan requires approval, to *awaiting approval* instead, until every named approver has
   signed. Traffic stays as in the canary meanwhile, and the stop rules still apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from fetalmlops.changecontrol.plan import Approval, Rollout
from fetalmlops.common.db import RolloutPhase
from fetalmlops.common.planes import Plane
from fetalmlops.metrics import classification

PLANES = [plane.value for plane in Plane]

# The fewest observations a stop rule's figure must rest on before it may roll back.
MIN_EVIDENCE = 30


@dataclass(frozen=True)
class ArmFigures:
    """One arm over the rollout: what it predicted, how it did on feedback, how fast."""

    predictions: int
    feedback: int  # of those, with a clinician's confirmed plane
    macro_f1: float  # on that feedback; NaN without any
    mean_confidence: float  # of the top probability; NaN without predictions
    latency_p95_ms: float  # NaN without predictions
    failures: int = 0  # runs that failed (the challenger's, in canary; the champion answered)

    @property
    def error_rate(self) -> float:
        attempts = self.predictions + self.failures
        return self.failures / attempts if attempts else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "feedback": self.feedback,
            "macro_f1": _json(self.macro_f1),
            "mean_confidence": _json(self.mean_confidence),
            "latency_p95_ms": _json(self.latency_p95_ms),
            "failures": self.failures,
        }


@dataclass(frozen=True)
class Seen:
    """One prediction of an arm: its plane, its confidence, its latency, and the truth when a
    clinician gave it."""

    predicted: str
    confidence: float
    latency_ms: float | None
    truth: str | None


def figures(seen: Sequence[Seen], failures: int = 0) -> ArmFigures:
    """An arm's figures from its predictions; macro-F1 over the planes the feedback confirmed
    (as the monitor's performance reports average it)."""
    confirmed = [s for s in seen if s.truth in PLANES and s.predicted in PLANES]
    macro_f1 = math.nan
    if confirmed:
        confusion = classification.confusion_matrix(
            [PLANES.index(s.truth) for s in confirmed if s.truth is not None],
            [PLANES.index(s.predicted) for s in confirmed],
            len(PLANES),
        )
        macro_f1 = float(classification.macro_f1(confusion, over="truth"))
    latencies = [s.latency_ms for s in seen if s.latency_ms is not None]
    return ArmFigures(
        predictions=len(seen),
        feedback=sum(s.truth is not None for s in seen),
        macro_f1=macro_f1,
        mean_confidence=float(np.mean([s.confidence for s in seen])) if seen else math.nan,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies else math.nan,
        failures=failures,
    )


@dataclass(frozen=True)
class Comparison:
    """The two arms side by side, and their agreement on the images both scored (shadow)."""

    champion: ArmFigures
    challenger: ArmFigures
    shadow_predictions: int  # the challenger's shadow predictions (each pairs with one answer)
    canary_predictions: int  # images the challenger answered in the canary
    canary_feedback: int  # of those, with a clinician's plane
    paired: int  # shadow predictions whose champion answer is known
    disagreements: int  # of those, a different plane

    @property
    def disagreement(self) -> float:
        return self.disagreements / self.paired if self.paired else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion.to_dict(),
            "challenger": self.challenger.to_dict(),
            "shadow_predictions": self.shadow_predictions,
            "canary_predictions": self.canary_predictions,
            "canary_feedback": self.canary_feedback,
            "paired": self.paired,
            "disagreement": _json(self.disagreement),
        }


@dataclass(frozen=True)
class Standing:
    """Where a rollout is: its phase, since when, and who has approved it."""

    phase: RolloutPhase
    phase_started_at: datetime
    approvers: frozenset[str] = frozenset()


class Action(StrEnum):
    STAY = "stay"
    CANARY = "canary"
    AWAIT_APPROVAL = "await approval"
    PROMOTE = "promote"
    ROLL_BACK = "roll back"


@dataclass(frozen=True)
class Step:
    action: Action
    reason: str

    @property
    def phase(self) -> RolloutPhase | None:
        """The phase the rollout moves to; None when it stays where it is."""
        return {
            Action.CANARY: RolloutPhase.CANARY,
            Action.AWAIT_APPROVAL: RolloutPhase.AWAITING_APPROVAL,
            Action.PROMOTE: RolloutPhase.PROMOTED,
            Action.ROLL_BACK: RolloutPhase.ROLLED_BACK,
        }.get(self.action)


def first_phase(rules: Rollout) -> RolloutPhase:
    return RolloutPhase.SHADOW if rules.shadow else RolloutPhase.CANARY


def next_step(
    rules: Rollout, approval: Approval, standing: Standing, arms: Comparison, now: datetime
) -> Step:
    """What the rollout does next (see the module docstring for the order of the checks)."""
    if not standing.phase.active:
        return Step(Action.STAY, f"the rollout has ended ({standing.phase.value})")
    stopped = stop_rule(rules, arms)
    if stopped is not None:
        return Step(Action.ROLL_BACK, stopped)
    if standing.phase is RolloutPhase.AWAITING_APPROVAL:
        return approved(approval, standing.approvers)
    elapsed = now - standing.phase_started_at
    if standing.phase is RolloutPhase.SHADOW:
        if arms.shadow_predictions >= rules.shadow_min_predictions:
            return Step(
                Action.CANARY,
                f"{arms.shadow_predictions} shadow predictions of the "
                f"{rules.shadow_min_predictions} required, no stop rule met",
            )
        return overdue(rules, elapsed, "shadow") or Step(Action.STAY, "shadow: gathering")
    if (
        arms.canary_predictions >= rules.min_predictions
        and arms.canary_feedback >= rules.min_feedback
    ):
        met = (
            f"canary: {arms.canary_predictions} predictions and {arms.canary_feedback} with "
            f"feedback (at least {rules.min_predictions} and {rules.min_feedback}), "
            "no stop rule met"
        )
        compared = on_feedback(rules, arms)
        if compared is not None:  # worse (rolled back), or not yet comparable (within time)
            late = overdue(rules, elapsed, "canary")
            return late if compared.action is Action.STAY and late is not None else compared
        if approval.required:
            return Step(Action.AWAIT_APPROVAL, f"{met}; waiting for {_names(approval.approvers)}")
        return Step(Action.PROMOTE, met)
    return overdue(rules, elapsed, "canary") or Step(Action.STAY, "canary: gathering")


def stop_rule(rules: Rollout, arms: Comparison) -> str | None:
    """Why the challenger must be rolled back now, or None."""
    limits = rules.stop_rules
    champion, challenger = arms.champion, arms.challenger
    if min(champion.feedback, challenger.feedback) >= MIN_EVIDENCE:
        drop = champion.macro_f1 - challenger.macro_f1
        if drop > limits.max_macro_f1_drop:
            return (
                f"feedback macro-F1 {challenger.macro_f1:.3f} against the champion's "
                f"{champion.macro_f1:.3f}: a drop of {drop:.3f} > {limits.max_macro_f1_drop:.3f}"
            )
    if arms.paired >= MIN_EVIDENCE and arms.disagreement > limits.max_disagreement:
        return (
            f"the arms disagree on {arms.disagreements} of {arms.paired} images "
            f"({arms.disagreement:.3f} > {limits.max_disagreement:.3f})"
        )
    attempts = challenger.predictions + challenger.failures
    if attempts >= MIN_EVIDENCE and challenger.error_rate > limits.max_error_rate:
        return (
            f"{challenger.failures} of the challenger's {attempts} runs failed "
            f"({challenger.error_rate:.3f} > {limits.max_error_rate:.3f})"
        )
    return None


def on_feedback(rules: Rollout, arms: Comparison) -> Step | None:
    """At the canary's minimums, the feedback comparison the promotion rests on: a challenger
    worse than the champion by more than ``max_macro_f1_drop`` on the feedback gathered is
    rolled back, however little (the plan's ``min_feedback`` is the evidence it asked for; the
    early stop rule waits for `MIN_EVIDENCE`); without the champion's figure it waits."""
    champion, challenger = arms.champion.macro_f1, arms.challenger.macro_f1
    if math.isnan(champion) or math.isnan(challenger):
        return Step(Action.STAY, "canary: waiting for feedback on both arms")
    drop = champion - challenger
    if drop > rules.stop_rules.max_macro_f1_drop:
        return Step(
            Action.ROLL_BACK,
            f"at the canary's minimums, feedback macro-F1 {challenger:.3f} against the "
            f"champion's {champion:.3f}: a drop of {drop:.3f} > "
            f"{rules.stop_rules.max_macro_f1_drop:.3f}",
        )
    return None


def overdue(rules: Rollout, elapsed: timedelta, phase: str) -> Step | None:
    limit = timedelta(hours=rules.max_duration_hours)
    if elapsed <= limit:
        return None
    return Step(
        Action.ROLL_BACK,
        f"{phase} ran {elapsed.total_seconds() / 3600:.1f} h without its minimums "
        f"(at most {rules.max_duration_hours:g} h)",
    )


def approved(approval: Approval, given: frozenset[str]) -> Step:
    missing = [name for name in approval.approvers if name not in given]
    if missing:
        return Step(Action.STAY, f"waiting for {_names(missing)}")
    return Step(Action.PROMOTE, f"approved by {_names(approval.approvers)}")


def _names(names: list[str]) -> str:
    return ", ".join(names)


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value
