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

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from fetalmlops.common.bus import Record, Rejected, read_event
from fetalmlops.common.db import ModelStage, ModelVersion, session_scope
from fetalmlops.common.db.audit import entries
from fetalmlops.common.db.columns import utcnow
from fetalmlops.trainer import registry
from fetalmlops.trainer.platform import Platform, announce_promoted, refresh_card
from fetalmlops.v1 import models_pb2

log = logging.getLogger(__name__)


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
            followed = self.follow(session, state)
        if followed.promoted is not None:
            version, previous = followed.promoted
            decision = registry.Decision(True, [state.reason or "promoted by its rollout"])
            announce_promoted(self.platform, version, previous, decision)
        for number in followed.changed:  # each card's change history tells the change
            refresh_card(self.platform, state.model_name, number)
        if followed.changed:
            log.info(
                "registry followed the rollout",
                extra={"model": state.model_name, "sequence": state.sequence,
                       "changed": list(followed.changed)},
            )  # fmt: skip

    def follow(self, session: Session, state: models_pb2.RolloutChanged) -> Followed:
        """Sets the stages; what to announce and whose cards to rewrite."""
        name = state.model_name
        trail = [e for e in entries(session, f"model:{name}:v") if e.actor == registry.ACTOR]
        applied = max((int(e.details.get("rollout_sequence", 0)) for e in trail), default=0)
        if state.sequence <= applied:  # a replay: announce again what this state promoted
            made = [e for e in trail if e.action == "promoted"
                    and e.details.get("rollout_sequence") == state.sequence]  # fmt: skip
            if not made:
                return Followed(None, ())
            again = _version(session, name, state.champion_version)
            previous = int(made[-1].details.get("previous_version", 0))
            return Followed((again, previous), ())
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
            return Followed(None, found.reject)
        promoted = _version(session, name, found.promote)
        previous = current.version if current else 0
        if current is not None:
            current.stage = ModelStage.ARCHIVED
            session.flush()  # the partial unique index allows one production version at a time
            registry.audit(session, "archived", current, details | {"replaced_by": found.promote})
        promoted.stage, promoted.promoted_at = ModelStage.PRODUCTION, utcnow()
        registry.audit(session, "promoted", promoted, details | {"previous_version": previous})
        changed = (*found.reject, found.promote, *([previous] if previous else []))
        return Followed((promoted, previous), changed)


@dataclass(frozen=True)
class Followed:
    """What following a state did: the promotion to announce (the version, and the one it
    replaced), and the versions whose stage changed."""

    promoted: tuple[ModelVersion, int] | None
    changed: tuple[int, ...]


def _version(session: Session, name: str, number: int) -> ModelVersion:
    version = session.scalars(
        select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.version == number)
    ).one_or_none()
    if version is None:
        raise Rejected(f"the rollout names {name} v{number}, which the registry does not hold")
    return version
