"""In-process bus with Kafka's semantics, for the one-process quick start and fast tests.

Topics have partitions chosen by the same murmur2 key hash as Kafka's default partitioner;
consumer groups split partitions between members; a group resumes from its committed offsets,
so whatever a member polled but did not commit is delivered again after it leaves. Like Kafka's
eager rebalance, every member restarts from the committed offsets when membership changes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from kafka.partitioner.default import murmur2

from fetalmlops.common.bus.base import BusUnavailable, Headers, Record

TopicPartition = tuple[str, int]


@dataclass
class _Member:
    member_id: int
    group: str
    topics: tuple[str, ...]
    positions: dict[TopicPartition, int] = field(default_factory=dict)


class EmbeddedBus:
    def __init__(self, partitions: int = 3) -> None:
        self._default_partitions = partitions
        self._changed = threading.Condition()
        self._logs: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._members: dict[str, list[_Member]] = {}
        self._ids = itertools.count()
        self._closed = False

    def ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        with self._changed:
            created = {t for t in topics if t not in self._logs}
            for topic in created:
                self._logs[topic] = [[] for _ in range(partitions)]
            # Like Kafka, only a new topic that a group subscribes to changes its assignment.
            for group, members in self._members.items():
                if any(created & set(m.topics) for m in members):
                    self._rebalance(group)

    def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        if self._closed:
            # A closed Kafka producer takes nothing more either; saying so beats losing it.
            raise BusUnavailable(f"{topic}: the bus is closed")
        self.ensure_topics([topic], self._default_partitions)
        with self._changed:
            log = self._logs[topic]
            partition = (murmur2(key.encode()) & 0x7FFFFFFF) % len(log)
            offsets = log[partition]
            offsets.append(Record(topic, partition, len(offsets), key, value, tuple(headers)))
            self._changed.notify_all()

    def subscribe(self, topics: Sequence[str], group: str) -> EmbeddedSubscription:
        self.ensure_topics(topics, self._default_partitions)
        with self._changed:
            member = _Member(next(self._ids), group, tuple(topics))
            self._members.setdefault(group, []).append(member)
            self._rebalance(group)
        return EmbeddedSubscription(self, member)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._members.clear()
            self._changed.notify_all()

    def committed(self, group: str, topic: str, partition: int) -> int:
        with self._changed:
            return self._committed.get((group, topic, partition), 0)

    # The methods below run with the condition held.

    def _rebalance(self, group: str) -> None:
        members = self._members.get(group, [])
        for member in members:
            member.positions.clear()
        for topic in sorted({t for m in members for t in m.topics}):
            interested = [m for m in members if topic in m.topics]
            for partition in range(len(self._logs[topic])):
                owner = interested[partition % len(interested)]
                owner.positions[(topic, partition)] = self._committed.get(
                    (group, topic, partition), 0
                )
        self._changed.notify_all()

    def _poll(self, member: _Member, timeout_s: float, max_records: int) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                batch: list[Record] = []
                for (topic, partition), position in member.positions.items():
                    log = self._logs[topic][partition]
                    taken = log[position : position + max_records - len(batch)]
                    batch.extend(taken)
                    member.positions[(topic, partition)] = position + len(taken)
                    if len(batch) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                self._changed.wait(remaining)

    def _commit(self, member: _Member, record: Record) -> None:
        with self._changed:
            if (record.topic, record.partition) in member.positions:
                key = (member.group, record.topic, record.partition)
                self._committed[key] = max(self._committed.get(key, 0), record.offset + 1)

    def _leave(self, member: _Member) -> None:
        with self._changed:
            members = self._members.get(member.group, [])
            if member in members:
                members.remove(member)
                self._rebalance(member.group)


class EmbeddedSubscription:
    def __init__(self, bus: EmbeddedBus, member: _Member, max_records: int = 100) -> None:
        self._bus = bus
        self._member = member
        self._max_records = max_records

    def poll(self, timeout_s: float) -> list[Record]:
        return self._bus._poll(self._member, timeout_s, self._max_records)

    def commit(self, record: Record) -> None:
        self._bus._commit(self._member, record)

    def close(self) -> None:
        self._bus._leave(self._member)
