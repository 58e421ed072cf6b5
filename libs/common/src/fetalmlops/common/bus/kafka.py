"""The Kafka backend on kafka-python: acks=all keyed producer, manual-commit consumer groups.

A publish ends, within ``PUBLISH_BOUND_S``, in one of two known outcomes: acknowledged by the
broker, or given up by the producer (``BusUnavailable``), after which the producer holds no
copy that could still be delivered. The idempotent producer lets the broker drop the copies its
own retries send during a broker restart. Without these bounds the client keeps a record for
its 120 s delivery timeout: a caller that gave up after 30 s was told "failed" for a message
that still arrived, and its retry announced the image a second time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    BrokerNotAvailableError,
    IllegalStateError,
    KafkaTimeoutError,
    RetriableError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata

from fetalmlops.common.bus.base import BusUnavailable, Headers, Record

# send() waits this long for metadata (and the first connection, when the producer is new).
MAX_BLOCK_MS = 2000
# One produce request; a small event is acknowledged in milliseconds by a healthy broker.
REQUEST_TIMEOUT_MS = 4000
# From send() to the ack or the producer giving up, retries and in-flight requests included.
DELIVERY_TIMEOUT_MS = 5000
# The longest a publish can take: a new producer's bootstrap, metadata, delivery, the margin.
PUBLISH_BOUND_S = (2 * MAX_BLOCK_MS + DELIVERY_TIMEOUT_MS) / 1000 + 1.0
CLOSE_TIMEOUT_S = 30.0
# What a broker outage looks like to the producer; any other KafkaError is a real fault (a
# record over the size limit, a misconfiguration) that a retry would only repeat.
UNAVAILABLE = (RetriableError, BrokerNotAvailableError)


class KafkaBus:
    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str = "fetalmlops",
        session_timeout_ms: int = 10000,
        max_poll_interval_ms: int = 300000,
    ) -> None:
        self._bootstrap = bootstrap_servers.split(",")
        self._client_id = client_id
        # A crashed consumer's partitions wait this long for it; the client default (45 s)
        # stalls a partition for most of a minute after a pod dies.
        self._session_timeout_ms = session_timeout_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()

    def ensure_topics(self, topics: Sequence[str], partitions: int) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self._bootstrap, client_id=self._client_id)
        try:
            missing = set(topics) - set(admin.list_topics())
            for topic in sorted(missing):
                # Another process may create it between our list and create: that is fine.
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
        finally:
            admin.close()

    def publish(self, topic: str, key: str, value: bytes, headers: Headers = ()) -> None:
        try:
            producer = self._open_producer()
            future = producer.send(topic, key=key.encode(), value=value, headers=list(headers))
        except UNAVAILABLE as exc:
            # Refused before send() returned (no broker to bootstrap from, no metadata): nothing
            # was buffered.
            raise BusUnavailable(f"{topic}: {type(exc).__name__}") from None
        try:
            # Waiting for the broker's ack is what lets a consumer commit after publishing. The
            # producer resolves the future itself by the delivery timeout; the margin is spare.
            future.get(timeout=DELIVERY_TIMEOUT_MS / 1000 + 1.0)
        except (*UNAVAILABLE, IllegalStateError) as exc:
            # IllegalStateError: another thread discarded the producer with this record in it.
            if not future.is_done:
                # The client did not resolve it in time after all: drop the producer and what it
                # buffered, so that nothing of this record can still go out after we said no.
                self._discard(producer)
            raise BusUnavailable(f"{topic}: {type(exc).__name__}") from None

    def _open_producer(self) -> KafkaProducer:
        with self._producer_lock:
            if self._producer is None:
                # Created lazily so a consumer-only service never opens one.
                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    client_id=self._client_id,
                    acks="all",
                    enable_idempotence=True,
                    max_block_ms=MAX_BLOCK_MS,
                    bootstrap_timeout_ms=MAX_BLOCK_MS,
                    request_timeout_ms=REQUEST_TIMEOUT_MS,
                    delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                )
            return self._producer

    def _discard(self, producer: KafkaProducer) -> None:
        with self._producer_lock:
            if self._producer is producer:
                self._producer = None
        # kafka-python's close() first flushes, and raises when records are still buffered
        # before it stops the sender, which would go on delivering them. Forcing the sender
        # closed fails every buffered record (IllegalStateError) and sends none of them.
        producer._sender.force_close()
        producer._sender.join(CLOSE_TIMEOUT_S)
        with contextlib.suppress(KafkaTimeoutError):
            producer.close(timeout=0)

    def subscribe(self, topics: Sequence[str], group: str) -> KafkaSubscription:
        consumer = KafkaConsumer(
            *topics,
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=100,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 4),
            max_poll_interval_ms=self._max_poll_interval_ms,
        )
        # kafka-python joins the group with whatever topic metadata it holds; a join before the
        # first metadata response assigns nothing, and the rejoin waits for the next metadata
        # refresh (minutes). Fetching the partitions first makes the first assignment whole.
        for topic in topics:
            consumer.partitions_for_topic(topic)
        return KafkaSubscription(consumer)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=CLOSE_TIMEOUT_S)
            self._producer = None


class KafkaSubscription:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    def poll(self, timeout_s: float) -> list[Record]:
        polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [
            Record(
                topic=m.topic,
                partition=m.partition,
                offset=m.offset,
                key=m.key.decode() if m.key is not None else None,
                value=m.value,
                headers=tuple((name, value or b"") for name, value in m.headers or ()),
            )
            for messages in polled.values()
            for m in messages
        ]

    def commit(self, record: Record) -> None:
        partition = TopicPartition(record.topic, record.partition)
        self._consumer.commit({partition: OffsetAndMetadata(record.offset + 1, "", -1)})

    def close(self) -> None:
        self._consumer.close(autocommit=False)
