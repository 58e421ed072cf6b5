"""What every bus backend offers: durable keyed publishing and consumer-group subscriptions.

The two backends (Kafka, embedded) implement only transport. Retries, dead-lettering, tracing
and metrics live once, in ``consume`` and ``publish_event``, so both behave alike by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Headers = Sequence[tuple[str, bytes]]


class Unavailable(ConnectionError):
    """Something a handler needs is down (the bus, an API it calls): not the message's fault.

    The consumer loop neither retries the record to exhaustion nor dead-letters it: it handles
    the record again, without committing, until the dependency answers (`consume`).
    """


class BusUnavailable(Unavailable):
    """A publish that the bus definitely did not take: nothing of it will be delivered later.

    Raised within a bounded time (the Kafka backend's delivery timeout), so a caller can answer
    "try again later" knowing a retry will not duplicate the message. The text names the topic
    and the transport's error type, never the message.
    """


@dataclass(frozen=True)
class Record:
    """One message as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class Subscription(Protocol):
    """One member of a consumer group."""

    def poll(self, timeout_s: float) -> list[Record]:
        """Records after this member's position on its assigned partitions (may be empty)."""

    def commit(self, record: Record) -> None:
        """Mark ``record`` and everything before it on its partition as done for the group."""

    def close(self) -> None:
        """Leave the group without committing: uncommitted records go to the next member."""


class Bus(Protocol):
    def ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create the topics that do not exist yet."""

    def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        """Append a message; returns once it is durable (acks=all on Kafka).

        Raises ``BusUnavailable`` when the bus cannot take it now (broker down, bus closed).
        """

    def subscribe(self, topics: Sequence[str], group: str) -> Subscription: ...

    def close(self) -> None: ...
