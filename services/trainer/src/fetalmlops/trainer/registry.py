"""The model registry: versions, stages, and a quality gate in front of production.

A version is registered as a *candidate*. It becomes *production* only when the gate says so:
its validation macro-F1 must clear absolute floors (overall and per class: a model that never
recognises the cervix is not acceptable however good its average) and beat production's by the
configured margin. The previous production version is *archived* in the same transaction, and
the database's partial unique index refuses a second production version should two promotions
race. Every decision, for or against, is written to the audit log with its reasons.

Under a change-control plan the trainer promotes nothing: a version is judged against its
champion by the plan's acceptance gate and becomes a *challenger* (it may meet live traffic, in
the plan's rollout) or is *rejected* (never served), its verdict and evidence kept on the
version (`gate`) and in the audit log ("gate passed", "gate failed").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fetalmlops.common.db import ModelStage, ModelVersion
from fetalmlops.common.db.audit import append
from fetalmlops.common.db.columns import utcnow

ACTOR = "trainer"


@dataclass(frozen=True)
class Gate:
    min_improvement: float = 0.0  # over production's validation macro-F1; < 0 tolerates a dip
    min_macro_f1: float = 0.70
    min_class_recall: float = 0.30


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.reasons)


def decide(
    candidate: Mapping[str, Any], production: Mapping[str, Any] | None, gate: Gate
) -> Decision:
    """Pure: metrics dicts as stored on `ModelVersion.metrics` (``val_macro_f1`` and
    ``val_per_class_recall``)."""
    reasons, promote = [], True
    f1 = float(candidate["val_macro_f1"])
    if f1 < gate.min_macro_f1:
        promote = False
        reasons.append(f"validation macro-F1 {f1:.3f} below the floor {gate.min_macro_f1:.3f}")
    weak = {
        name: recall
        for name, recall in candidate.get("val_per_class_recall", {}).items()
        if recall < gate.min_class_recall
    }
    if weak:
        promote = False
        listed = ", ".join(f"{name} {recall:.3f}" for name, recall in sorted(weak.items()))
        reasons.append(f"recall below {gate.min_class_recall:.3f}: {listed}")
    if production is None:
        reasons.append("no production version yet")
    else:
        bar = float(production["val_macro_f1"]) + gate.min_improvement
        if f1 < bar:
            promote = False
            reasons.append(
                f"validation macro-F1 {f1:.3f} does not reach production's bar {bar:.3f}"
            )
        else:
            reasons.append(f"validation macro-F1 {f1:.3f} reaches production's bar {bar:.3f}")
    return Decision(promote, reasons)


def next_version(session: Session, model_name: str) -> int:
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    return int(latest or 0) + 1


def by_training_run(session: Session, training_run: str) -> ModelVersion | None:
    """The version a training run registered already (a restarted Job does not register twice)."""
    return session.scalars(
        select(ModelVersion).where(ModelVersion.training_run == training_run)
    ).one_or_none()


def production(session: Session, model_name: str) -> ModelVersion | None:
    return session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.stage == ModelStage.PRODUCTION
        )
    ).one_or_none()


def register(session: Session, version: ModelVersion) -> ModelVersion:
    session.add(version)
    session.flush()
    lineage = {
        "snapshot_id": version.snapshot_id,
        "training_run": version.training_run,
        "parent_version": version.parent_version,
        "recipe": version.recipe,
    }
    audit(session, "registered", version, {"metrics": _headline(version.metrics), **lineage})
    return version


def recipe(session: Session, model_name: str, number: int) -> dict[str, Any] | None:
    """The configuration version ``number`` of ``model_name`` was trained with; None when the
    version is unknown or was registered before recipes were kept."""
    return session.scalars(
        select(ModelVersion.recipe).where(
            ModelVersion.model_name == model_name, ModelVersion.version == number
        )
    ).one_or_none()


def promote_if_better(
    session: Session, candidate: ModelVersion, gate: Gate
) -> tuple[Decision, ModelVersion | None]:
    """The decision, and the version it archived; the candidate is promoted when it passes."""
    current = production(session, candidate.model_name)
    if current is not None and current.id == candidate.id:
        return Decision(True, ["already in production"]), None
    decision = decide(candidate.metrics, current.metrics if current else None, gate)
    details = {"reasons": decision.reasons, "gate": gate.__dict__}
    if not decision.promote:
        audit(session, "promotion refused", candidate, details)
        return decision, None
    if current is not None:
        current.stage = ModelStage.ARCHIVED
        session.flush()  # the partial unique index allows one production version at a time
        audit(session, "archived", current, {"replaced_by": candidate.version})
    candidate.stage, candidate.promoted_at = ModelStage.PRODUCTION, utcnow()
    audit(session, "promoted", candidate, details)
    return decision, current


def stage_after_gate(passed: bool) -> ModelStage:
    """Pure: where a plan's verdict leaves a version."""
    return ModelStage.CHALLENGER if passed else ModelStage.REJECTED


def record_verdict(session: Session, version: ModelVersion, evidence: dict[str, Any]) -> None:
    """The plan's verdict on ``version`` (`challenge.evidence`): its stage, the verdict kept on
    it, and the audit entry citing the same evidence, in the caller's transaction."""
    passed = bool(evidence["passed"])
    version.stage, version.gate = stage_after_gate(passed), evidence
    audit(session, "gate passed" if passed else "gate failed", version, evidence)


def audit(session: Session, action: str, version: ModelVersion, details: dict[str, Any]) -> None:
    append(session, ACTOR, action, f"model:{version.model_name}:v{version.version}", details)


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
