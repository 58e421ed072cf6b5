"""Follow promotions: each new production version of the served model replaces the old one.

The registry announces a promotion on `fetal.models.promoted` with the version's storage URI.
This replica loads that version beside the one it serves and then switches: a request decoded
for the old version finishes on it, the next one gets the new, and none waits or fails
(`PlanePredictor.switch`). Every replica must see every promotion, so each process reads in a
consumer group of its own, from the start of the topic: promotions made while it was down are
caught up. A promotion is followed when it is newer than the served version, or when it
replaces exactly the served version (a rollback); older history is skipped, so catching up
never steps back. A version that does not load is retried, then dead-lettered with the reason,
while the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from fetalmlops.common.bus import Bus, Consumer, Record, Rejected, read_event
from fetalmlops.common.service import consume_or_stop
from fetalmlops.inference.archive import Archive, ArchiveError
from fetalmlops.inference.metrics import RELOADS
from fetalmlops.inference.predictor import PlanePredictor, version_number
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
        if not follows(event, self.predictor.archive):
            RELOADS.labels("skipped").inc()
            return
        try:
            self.predictor.switch(self.open_version(event.storage_uri))
        except (ArchiveError, RuntimeError, OSError):
            RELOADS.labels("failed").inc()
            raise  # retried (the store may be back), then dead-lettered with the reason
        RELOADS.labels("switched").inc()
        log.info(
            "switched to the promoted version",
            extra={"model": event.model_name, "model_version": event.version},
        )


def follows(event: models_pb2.ModelPromoted, served: Archive) -> bool:
    if event.model_name != served.model_name:
        return False
    number = version_number(served.model_version)
    return event.version != number and (event.version > number or event.previous_version == number)


@dataclass(frozen=True)
class Following:
    stop: threading.Event
    thread: threading.Thread

    def close(self, timeout_s: float = 30.0) -> None:
        """Leaves the consumer group (before the bus is closed under it)."""
        self.stop.set()
        self.thread.join(timeout_s)


def follow(bus: Bus, follower: Follower, topic: str, deadletter_topic: str) -> Following:
    """Consumes ``topic`` in a thread until closed. A consumer that fails (Kafka gone for good)
    stops the process, as every service's consumers do, rather than serve on deaf to
    promotions."""
    stop = threading.Event()
    consumer = Consumer(
        topics=[topic],
        group=f"inference-reload-{uuid.uuid4().hex}",
        handler=follower.handle,
        deadletter_topic=deadletter_topic,
    )
    thread = threading.Thread(
        target=consume_or_stop, args=(bus, consumer, stop), name="promotions", daemon=True
    )
    thread.start()
    return Following(stop, thread)
