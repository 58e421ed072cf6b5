"""Follow rollouts: what `fetal.models.rollout` says the served model answers with.

A `RolloutChanged` is the whole state of a model's rollout, published under the model's name:
its champion, its challenger (version 0: none), the mode (champion alone, shadow, canary) and
the canary fraction. Only states of the served model (the archive's own name, as the registry
names it) apply, and only one whose ``sequence`` is greater than the last this replica applied:
each process reads in a consumer group of its own from the start of the topic (as promotions
are read, `reload.py`), so a replay or a catch-up ends on the latest state and never steps
back. Applying a state loads the versions this replica does not hold already (a version held,
as champion or challenger, is reused: a challenger becoming champion is not loaded twice), then
swaps the arms in one assignment (`PlanePredictor.change`): requests in flight finish on the
arms they started with and the next ones get the new. A version that does not load is retried,
then dead-lettered with the reason, while the old arms keep serving; a state that cannot be
served (a shadow or canary without a challenger, a fraction outside [0, 1]) is dead-lettered at
once. A state naming no champion (version 0: a model whose first version is still on trial)
gives this replica nothing to serve instead of what it serves, so it is skipped. A replica
awaiting its model's first version (`main.py`) serves the first state of that model naming a
champion, as it would the first promotion (`reload.py`).

Promotions and rollout states both change the champion. The rule between them:

* a promotion makes the promoted version the champion alone, ending any rollout; it keeps the
  sequence applied, so a rollout state changes the arms again only with a greater sequence;
* the two topics are read by two threads, in no order between them, so every change carries
  when it was decided (its event's ``occurred_at``), and a promotion or a rollout state decided
  before the change the arms already reflect is skipped. Catching up on both topics thus ends
  on the latest decision of either. That compares the clocks of the two publishers, which NTP
  keeps far closer than two decisions on one model ever are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from fetalmlops.common.bus import Record, Rejected, read_event
from fetalmlops.inference.archive import Archive, ArchiveError
from fetalmlops.inference.arms import Arms, Loaded, Mode, decided_ns
from fetalmlops.inference.metrics import ROLLOUTS
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.v1 import models_pb2

log = logging.getLogger(__name__)

MODES = {mode.value: mode for mode in Mode}


@dataclass(frozen=True)
class RolloutFollower:
    predictor: PlanePredictor
    open_version: Callable[[str], Archive]  # a storage URI, downloaded and unpacked

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, models_pb2.RolloutChanged):
            raise Rejected(f"expected RolloutChanged, got {type(event).__name__}")
        if event.model_name != self.predictor.registry_name or event.champion_version == 0:
            ROLLOUTS.labels("skipped").inc()
            return
        mistake = unservable(event)
        if mistake is not None:
            ROLLOUTS.labels("failed").inc()
            raise Rejected(f"rollout {event.sequence} of {event.model_name}: {mistake}")
        try:
            arms = self.predictor.change(partial(self.applied, event))
        except (ArchiveError, RuntimeError, OSError):
            ROLLOUTS.labels("failed").inc()
            raise  # retried (the store may be back), then dead-lettered with the reason
        if arms is None:
            ROLLOUTS.labels("skipped").inc()
            return
        ROLLOUTS.labels("applied").inc()
        log.info(
            "rollout applied",
            extra={
                "model": event.model_name,
                "sequence": event.sequence,
                "mode": arms.mode.name.lower(),
                "model_version": arms.champion.version,
                "challenger_version": None if arms.challenger is None else arms.challenger.version,
            },
        )

    def applied(self, event: models_pb2.RolloutChanged, arms: Arms | None) -> Arms | None:
        """The arms the state asks for; None when it is skipped (`superseded`, or no arms
        while a configured version is still to load)."""
        if arms is None and not self.predictor.awaiting_first_version:
            return None
        if arms is not None and superseded(event, arms):
            return None
        mode = MODES[event.mode]
        champion = self.version(arms, event.champion_version, event.champion_storage_uri)
        challenger = (
            None
            if mode is Mode.CHAMPION_ALONE
            else self.version(arms, event.challenger_version, event.challenger_storage_uri)
        )
        fraction = event.canary_fraction if mode is Mode.CANARY else 0.0
        return Arms(champion, challenger, mode, fraction, event.sequence, decided_ns(event.meta))

    def version(self, arms: Arms | None, number: int, storage_uri: str) -> Loaded:
        """The version held already, or loaded from the store (seconds: this thread waits)."""
        held = None if arms is None else arms.holding(number)
        if held is not None:
            return held
        return self.predictor.loaded_version(self.open_version(storage_uri))


def superseded(event: models_pb2.RolloutChanged, arms: Arms) -> bool:
    """A state not newer than the one applied, or decided before the arms' last change."""
    return event.sequence <= arms.sequence or decided_ns(event.meta) < arms.decided_ns


def unservable(event: models_pb2.RolloutChanged) -> str | None:
    """Why a replica cannot serve this state, or None. The reason names fields, never a URI."""
    mode = MODES.get(event.mode)
    if mode is None:
        return f"unknown mode {event.mode}"
    if event.champion_version < 1:
        return "no champion version"
    if not event.champion_storage_uri:
        return "no champion storage URI"
    if mode is Mode.CHAMPION_ALONE:
        return None
    if event.challenger_version < 1 or not event.challenger_storage_uri:
        return f"{mode.name.lower()} without a challenger version and storage URI"
    fraction = event.canary_fraction
    if mode is Mode.CANARY and not (math.isfinite(fraction) and 0.0 <= fraction <= 1.0):
        return f"the canary fraction {fraction} is not in [0, 1]"
    return None
