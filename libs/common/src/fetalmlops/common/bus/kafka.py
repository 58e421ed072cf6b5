"""The Kafka backend on kafka-python: acks=all keyed producer, manual-commit consumer groups."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from fetalmlops.common.bus.base import Headers, Record

PUBLISH_TIMEOUT_S = 30.0


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
        if self._producer is None:
            # The producer is created lazily so a consumer-only service never opens one.
            self._producer = KafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                acks="all",
                retries=5,
                max_in_flight_requests_per_connection=1,
            )
        future = self._producer.send(topic, key=key.encode(), value=value, headers=list(headers))
        # Waiting for the broker's ack is what lets a consumer commit after publishing.
        future.get(timeout=PUBLISH_TIMEOUT_S)

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
            self._producer.close(timeout=PUBLISH_TIMEOUT_S)
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
