"""A rollout's next step by the plan's rules: stop rules at any phase once they rest on enough
evidence, time limits, shadow to canary, canary to promotion or to the approvers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fetalmlops.changecontrol.plan import Approval, Rollout, load_plan
from fetalmlops.common.db import RolloutPhase
from fetalmlops.monitor.release import (
    MIN_EVIDENCE,
    Action,
    ArmFigures,
    Comparison,
    Seen,
    Standing,
    figures,
    next_step,
)

PLAN = load_plan(Path(__file__).resolve().parents[3] / "deploy/change-control/plan.yaml")
RULES: Rollout = PLAN.rollout
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
NO_APPROVAL = Approval(required=False, approvers=[])
TWO = Approval(required=True, approvers=["clinical-lead", "ml-lead"])


def arm(predictions: int = 0, feedback: int = 0, macro_f1: float = math.nan, failures: int = 0):
    return ArmFigures(predictions, feedback, macro_f1, 0.9, 20.0, failures)


def arms(
    champion: ArmFigures | None = None,
    challenger: ArmFigures | None = None,
    *,
    shadow: int = 0,
    canary: int = 0,
    canary_feedback: int = 0,
    paired: int = 0,
    disagreements: int = 0,
) -> Comparison:
    return Comparison(
        champion or arm(), challenger or arm(), shadow, canary, canary_feedback, paired,
        disagreements,
    )  # fmt: skip


def standing(phase: RolloutPhase, hours: float = 1.0, approvers: frozenset[str] = frozenset()):
    return Standing(phase, NOW - timedelta(hours=hours), approvers)


def test_shadow_becomes_canary_after_its_predictions() -> None:
    need = RULES.shadow_min_predictions
    gathering = next_step(
        RULES, NO_APPROVAL, standing(RolloutPhase.SHADOW), arms(shadow=need - 1), NOW
    )
    assert gathering.action is Action.STAY
    ready = next_step(RULES, NO_APPROVAL, standing(RolloutPhase.SHADOW), arms(shadow=need), NOW)
    assert ready.action is Action.CANARY and ready.phase is RolloutPhase.CANARY


def test_canary_promotes_with_its_minimums_or_waits_for_the_approvers() -> None:
    equal = {
        "champion": arm(feedback=300, macro_f1=0.8),
        "challenger": arm(feedback=20, macro_f1=0.8),
    }
    met = arms(**equal, canary=RULES.min_predictions, canary_feedback=RULES.min_feedback)
    short = arms(**equal, canary=RULES.min_predictions, canary_feedback=RULES.min_feedback - 1)
    canary = standing(RolloutPhase.CANARY)
    assert next_step(RULES, NO_APPROVAL, canary, short, NOW).action is Action.STAY
    assert next_step(RULES, NO_APPROVAL, canary, met, NOW).action is Action.PROMOTE
    waiting = next_step(RULES, TWO, canary, met, NOW)
    assert waiting.action is Action.AWAIT_APPROVAL and "clinical-lead, ml-lead" in waiting.reason
    half = standing(RolloutPhase.AWAITING_APPROVAL, approvers=frozenset({"ml-lead"}))
    assert next_step(RULES, TWO, half, met, NOW).action is Action.STAY
    both = standing(RolloutPhase.AWAITING_APPROVAL, approvers=frozenset(TWO.approvers))
    assert next_step(RULES, TWO, both, met, NOW).action is Action.PROMOTE


@pytest.mark.parametrize(
    "comparison",
    [
        arms(arm(feedback=MIN_EVIDENCE, macro_f1=0.90), arm(feedback=MIN_EVIDENCE, macro_f1=0.80)),
        arms(paired=100, disagreements=40),
        arms(challenger=arm(predictions=90, failures=10)),
    ],
    ids=["macro-F1 drop", "disagreement", "error rate"],
)
def test_a_stop_rule_rolls_back_in_any_active_phase(comparison: Comparison) -> None:
    for phase in (RolloutPhase.SHADOW, RolloutPhase.CANARY, RolloutPhase.AWAITING_APPROVAL):
        step = next_step(RULES, TWO, standing(phase), comparison, NOW)
        assert step.action is Action.ROLL_BACK, phase


def test_a_stop_rule_waits_for_enough_evidence() -> None:
    few = MIN_EVIDENCE - 1
    noisy = arms(
        arm(feedback=few, macro_f1=0.95),
        arm(predictions=few - 5, feedback=few, macro_f1=0.40, failures=5),
        paired=few,
        disagreements=few,
    )
    assert next_step(RULES, NO_APPROVAL, standing(RolloutPhase.CANARY), noisy, NOW).action is (
        Action.STAY
    )


def test_a_phase_that_runs_out_of_time_is_rolled_back() -> None:
    late = standing(RolloutPhase.CANARY, hours=RULES.max_duration_hours + 0.1)
    step = next_step(RULES, NO_APPROVAL, late, arms(canary=3), NOW)
    assert step.action is Action.ROLL_BACK and "without its minimums" in step.reason
    shadow_late = standing(RolloutPhase.SHADOW, hours=RULES.max_duration_hours + 0.1)
    assert next_step(RULES, NO_APPROVAL, shadow_late, arms(), NOW).action is Action.ROLL_BACK


def test_an_ended_rollout_stays_ended() -> None:
    for phase in (RolloutPhase.PROMOTED, RolloutPhase.ROLLED_BACK):
        bad = arms(paired=100, disagreements=100)
        assert next_step(RULES, NO_APPROVAL, standing(phase), bad, NOW).action is Action.STAY


def test_figures_score_the_feedback_and_ignore_what_has_none() -> None:
    seen = [
        Seen("fetal_brain", 0.9, 10.0, "fetal_brain"),
        Seen("fetal_brain", 0.8, 30.0, "fetal_femur"),
        Seen("fetal_femur", 0.7, 20.0, "fetal_femur"),
        Seen("other", 0.6, None, None),
    ]
    found = figures(seen, failures=1)
    # brain: precision 1/2, recall 1 → F1 2/3; femur: precision 1, recall 1/2 → F1 2/3
    assert found.macro_f1 == pytest.approx(2 / 3)
    assert (found.predictions, found.feedback, found.failures) == (4, 3, 1)
    assert found.mean_confidence == pytest.approx(0.75)
    assert found.error_rate == pytest.approx(1 / 5)
    assert math.isnan(figures([]).macro_f1) and math.isnan(figures([]).error_rate)


def test_at_its_minimums_a_canary_worse_on_feedback_is_rolled_back_not_promoted() -> None:
    few = MIN_EVIDENCE - 10  # below the early stop rule's evidence
    worse = arms(
        arm(feedback=200, macro_f1=0.80), arm(feedback=few, macro_f1=0.60),
        canary=RULES.min_predictions, canary_feedback=RULES.min_feedback,
    )  # fmt: skip
    step = next_step(RULES, TWO, standing(RolloutPhase.CANARY), worse, NOW)
    assert step.action is Action.ROLL_BACK and "at the canary's minimums" in step.reason
    unmeasured = arms(
        arm(), arm(feedback=few, macro_f1=0.9),
        canary=RULES.min_predictions, canary_feedback=RULES.min_feedback,
    )  # fmt: skip
    assert next_step(RULES, NO_APPROVAL, standing(RolloutPhase.CANARY), unmeasured, NOW).action is (
        Action.STAY
    )
    late = standing(RolloutPhase.CANARY, hours=RULES.max_duration_hours + 0.1)
    assert next_step(RULES, NO_APPROVAL, late, unmeasured, NOW).action is Action.ROLL_BACK
