"""The registry follows the rollouts: a version's stage from the serving state the monitor
decided (`fetal.models.rollout`).

Under a change-control plan the monitor moves a challenger through shadow and canary and ends
the rollout with a state naming one champion and no challenger: the challenger itself when it
was promoted, the old champion when it was rolled back. The registry owns the versions' stages,
so it follows: the state's champion becomes *production* (the one before it *archived*), a
challenger the state no longer serves becomes *rejected*, each in one transaction with its audit
entry, and a promotion is announced on `fetal.models.promoted` after the commit.

States are whole and carry a sequence, and every registry entry a state causes names it: a
state no newer than the last one applied is a replay and changes no stage (so replaying the
topic never steps back to an older champion). The replay of a promotion announces it again, so
that one made but not announced when the process died is not lost; a consumer of
`fetal.models.promoted` skips a promotion of the version it already serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fetalmlops.common.bus import Record, Rejected, read_event
from fetalmlops.common.db import ModelStage, ModelVersion, session_scope
from fetalmlops.common.db.audit import entries
from fetalmlops.common.db.columns import utcnow
from fetalmlops.trainer import registry
from fetalmlops.trainer.platform import Platform, announce_promoted
from fetalmlops.v1 import models_pb2


@dataclass(frozen=True)
class Changes:
    """What a state changes in the registry."""

    promote: int | None  # the version that becomes production
    reject: tuple[int, ...]  # challengers the state no longer serves


def changes(
    state: models_pb2.RolloutChanged, production: int | None, challengers: Sequence[int]
) -> Changes:
    """Pure: the stages ``state`` asks for, given the production version and the challengers."""
    champion = state.champion_version or None
    promote = champion if champion is not None and champion != production else None
    served = {state.champion_version, state.challenger_version}
    return Changes(promote, tuple(v for v in sorted(challengers) if v not in served))


@dataclass(frozen=True)
class Registrar:
    platform: Platform

    def handle(self, record: Record) -> None:
        state = read_event(record)
        if not isinstance(state, models_pb2.RolloutChanged):
            raise Rejected(f"expected RolloutChanged, got {type(state).__name__}")
        with session_scope(self.platform.engine) as session:
            announce = self.follow(session, state)
        if announce is not None:
            version, previous = announce
            decision = registry.Decision(True, [state.reason or "promoted by its rollout"])
            announce_promoted(self.platform, version, previous, decision)

    def follow(
        self, session: Session, state: models_pb2.RolloutChanged
    ) -> tuple[ModelVersion, int] | None:
        """Sets the stages; the version to announce as promoted and the one it replaced."""
        name = state.model_name
        trail = [e for e in entries(session, f"model:{name}:v") if e.actor == registry.ACTOR]
        applied = max((int(e.details.get("rollout_sequence", 0)) for e in trail), default=0)
        if state.sequence <= applied:  # a replay: announce again what this state promoted
            promoted = [e for e in trail if e.action == "promoted"
                        and e.details.get("rollout_sequence") == state.sequence]  # fmt: skip
            if not promoted:
                return None
            again = _version(session, name, state.champion_version)
            return again, int(promoted[-1].details.get("previous_version", 0))
        current = registry.production(session, name)
        challengers = session.scalars(
            select(ModelVersion.version).where(
                ModelVersion.model_name == name, ModelVersion.stage == ModelStage.CHALLENGER
            )
        ).all()
        found = changes(state, current.version if current else None, challengers)
        details = {"rollout_sequence": state.sequence, "reason": state.reason}
        for number in found.reject:
            version = _version(session, name, number)
            version.stage = ModelStage.REJECTED
            registry.audit(session, "rejected", version, details)
        if found.promote is None:
            return None
        promoted_version = _version(session, name, found.promote)
        previous = current.version if current else 0
        if current is not None:
            current.stage = ModelStage.ARCHIVED
            session.flush()  # the partial unique index allows one production version at a time
            registry.audit(session, "archived", current, details | {"replaced_by": found.promote})
        promoted_version.stage, promoted_version.promoted_at = ModelStage.PRODUCTION, utcnow()
        registry.audit(
            session, "promoted", promoted_version, details | {"previous_version": previous}
        )
        return promoted_version, previous


def _version(session: Session, name: str, number: int) -> ModelVersion:
    version = session.scalars(
        select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == number)
    ).one_or_none()
    if version is None:
        raise Rejected(f"the rollout names {name} v{number}, which the registry does not hold")
    return version
