"""The arms of a rollout: the champion that answers, and the challenger that meets traffic
beside it (`fetal.models.rollout`).

`Arms` is one immutable value: the predictor holds one and a change replaces it whole, in one
assignment, so a request keeps the arms it started with from decoding to answer and none waits
for, or fails with, a change. Three modes (the `RolloutMode` of the contract):

* champion alone: the champion answers every request (no rollout, or a rollback);
* shadow: the champion answers every request, and the challenger scores the same images off
  the answer's path, for comparison only;
* canary: the requests `canary_draw` puts below ``canary_fraction`` are answered by the
  challenger, the others by the champion.

The canary choice is a pure function of the server's own request id: the first 8 bytes of its
SHA-256, read as a big-endian integer over 2**64, a number in [0, 1). The same id gets the same
arm on every replica and every retry of the computation, and since SHA-256 spreads ids
uniformly the challenger's share of requests converges on the fraction. The id is the
server's (a uuid4), never the client's: a client cannot steer itself onto either arm.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from fetalmlops.inference.archive import Archive, Classifier
from fetalmlops.inference.batching import MicroBatcher
from fetalmlops.v1 import common_pb2, models_pb2, predictions_pb2


class Mode(enum.Enum):
    """How the challenger meets requests; the values are the contract's `RolloutMode`."""

    CHAMPION_ALONE = models_pb2.ROLLOUT_MODE_UNSPECIFIED
    SHADOW = models_pb2.ROLLOUT_MODE_SHADOW
    CANARY = models_pb2.ROLLOUT_MODE_CANARY


class Arm(enum.StrEnum):
    """Who made a prediction: the word answers carry, and the Prometheus label."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"  # answered a canary request
    SHADOW = "shadow"  # scored a request the champion answered

    @property
    def on_the_wire(self) -> predictions_pb2.Arm:
        """The arm as `PredictionMade.arm` names it."""
        return EVENT_ARMS[self]


EVENT_ARMS = {
    Arm.CHAMPION: predictions_pb2.ARM_CHAMPION,
    Arm.CHALLENGER: predictions_pb2.ARM_CHALLENGER,
    Arm.SHADOW: predictions_pb2.ARM_SHADOW,
}


@dataclass(frozen=True)
class Loaded:
    """A version ready to answer: its archive, its model, and the batcher in front of it."""

    archive: Archive
    classifier: Classifier
    batcher: MicroBatcher
    compute_device: str
    decoding: str  # `Archive.decoding_digest`: equal digests decode a request alike

    @property
    def version(self) -> str:
        return self.archive.model_version


@dataclass(frozen=True)
class Arms:
    """What a replica serves, whole. ``sequence`` is the last `RolloutChanged` applied (0:
    none yet) and ``decided_ns`` when the change these arms reflect was decided (its event's
    ``occurred_at``; 0 for the version configured at start): `rollout.py` orders changes by
    them."""

    champion: Loaded
    challenger: Loaded | None = None
    mode: Mode = Mode.CHAMPION_ALONE
    canary_fraction: float = 0.0
    sequence: int = 0
    decided_ns: int = 0

    def __post_init__(self) -> None:
        if self.mode is not Mode.CHAMPION_ALONE and self.challenger is None:
            raise ValueError(f"{self.mode.name.lower()} needs a challenger")
        if not 0.0 <= self.canary_fraction <= 1.0:
            raise ValueError(f"the canary fraction must be in [0, 1], not {self.canary_fraction}")

    def answering(self, request_id: str) -> Arm:
        """The arm that answers this request: the challenger for a canary request whose draw
        falls below the fraction, the champion otherwise."""
        if self.mode is Mode.CANARY and canary_draw(request_id) < self.canary_fraction:
            return Arm.CHALLENGER
        return Arm.CHAMPION

    def loaded(self, arm: Arm) -> Loaded:
        """The version behind ``arm`` (the challenger for a canary answer or a shadow)."""
        if arm is Arm.CHAMPION:
            return self.champion
        if self.challenger is None:
            raise LookupError(f"no challenger to answer as {arm}")
        return self.challenger

    @property
    def shadow(self) -> Loaded | None:
        """The challenger when it scores every request in the shadow of the champion."""
        return self.challenger if self.mode is Mode.SHADOW else None

    def holding(self, version: int) -> Loaded | None:
        """The loaded arm of this version number, so a change that keeps it loads nothing."""
        for loaded in (self.champion, self.challenger):
            if loaded is not None and version_number(loaded.version) == version:
                return loaded
        return None


def canary_draw(request_id: str) -> float:
    """The request's place in [0, 1): its id's SHA-256, first 8 bytes, over 2**64."""
    digest = hashlib.sha256(request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def version_number(version: str) -> int:
    """The registry's integer version; 0 for an archive versioned by hand ("1.0")."""
    try:
        return int(version)
    except ValueError:
        return 0


def decided_ns(meta: common_pb2.EventMeta) -> int:
    """When a change was decided: its event's ``occurred_at`` (0 when it has none)."""
    return int(meta.occurred_at.ToNanoseconds())
