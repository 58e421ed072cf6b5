"""Follow promotions: each new production version of the served model becomes the champion.

The registry announces a promotion on `fetal.models.promoted` with the version's storage URI.
This replica loads that version beside the one it serves and then switches: a request decoded
for the old version finishes on it, the next one gets the new, and none waits or fails
(`PlanePredictor.change`). Every replica must see every promotion, so each process reads in a
consumer group of its own, from the start of the topic: promotions made while it was down are
caught up. A promotion is followed when it is newer than the served version, or when it
replaces exactly the served version (a rollback); older history is skipped, so catching up
never steps back. A replica started before its model had any version (`main.py`) serves the
first promotion of that model's name it reads, whatever its number, and follows the next ones
from there. A version that does not load is retried, then dead-lettered with the reason, while
the old version keeps serving (or the replica keeps waiting).

A promotion ends any rollout (`rollout.py`): the promoted version answers alone. When it is the
challenger already loaded beside the champion, that model becomes the champion and nothing is
loaded again. A promotion decided before the change the arms already reflect (a later rollout
state, read first while catching up on both topics) is skipped; `rollout.py` says why.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from fetalmlops.common.bus import Bus, Consumer, Record, Rejected, read_event
from fetalmlops.common.service import consume_or_stop
from fetalmlops.inference.archive import Archive, ArchiveError
from fetalmlops.inference.arms import Arms, decided_ns, version_number
from fetalmlops.inference.metrics import RELOADS
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.v1 import models_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Follower:
    predictor: PlanePredictor
    open_version: Callable[[str], Archive]  # a storage URI, downloaded and unpacked

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, models_pb2.ModelPromoted):
            raise Rejected(f"expected ModelPromoted, got {type(event).__name__}")
        try:
            arms = self.predictor.change(partial(self.promoted, event))
        except (ArchiveError, RuntimeError, OSError):
            RELOADS.labels("failed").inc()
            raise  # retried (the store may be back), then dead-lettered with the reason
        if arms is None:
            RELOADS.labels("skipped").inc()
            return
        RELOADS.labels("switched").inc()
        log.info(
            "switched to the promoted version",
            extra={"model": event.model_name, "model_version": event.version},
        )

    def promoted(self, event: models_pb2.ModelPromoted, arms: Arms | None) -> Arms | None:
        """The promoted version as the champion alone; None when the promotion is skipped."""
        decided = decided_ns(event.meta)
        if arms is None:
            return self.first(event, decided)
        if not follows(event, arms.champion.archive) or decided < arms.decided_ns:
            return None
        champion = arms.holding(event.version)
        if champion is None:
            champion = self.predictor.loaded_version(self.open_version(event.storage_uri))
        return Arms(champion, sequence=arms.sequence, decided_ns=decided)

    def first(self, event: models_pb2.ModelPromoted, decided: int) -> Arms | None:
        """The first version of the model awaited, alone; None when the predictor awaits none
        (a version configured but not loaded yet) or the promotion is another model's."""
        predictor = self.predictor
        if not predictor.awaiting_first_version or event.model_name != predictor.registry_name:
            return None
        champion = predictor.loaded_version(self.open_version(event.storage_uri))
        return Arms(champion, decided_ns=decided)


def follows(event: models_pb2.ModelPromoted, served: Archive) -> bool:
    if event.model_name != served.model_name:
        return False
    number = version_number(served.model_version)
    return event.version != number and (event.version > number or event.previous_version == number)


class Handles(Protocol):
    def handle(self, record: Record) -> None: ...


@dataclass(frozen=True)
class Following:
    stop: threading.Event
    thread: threading.Thread

    def close(self, timeout_s: float = 30.0) -> None:
        """Leaves the consumer group (before the bus is closed under it)."""
        self.stop.set()
        self.thread.join(timeout_s)


def follow(
    bus: Bus, follower: Handles, topic: str, deadletter_topic: str, name: str = "promotions"
) -> Following:
    """Consumes ``topic`` in a thread until closed, in a group of this process's own. A
    consumer that fails (Kafka gone for good) stops the process, as every service's consumers
    do, rather than serve on deaf to promotions and rollouts."""
    stop = threading.Event()
    consumer = Consumer(
        topics=[topic],
        group=f"inference-{name}-{uuid.uuid4().hex}",
        handler=follower.handle,
        deadletter_topic=deadletter_topic,
    )
    thread = threading.Thread(
        target=consume_or_stop, args=(bus, consumer, stop), name=name, daemon=True
    )
    thread.start()
    return Following(stop, thread)
