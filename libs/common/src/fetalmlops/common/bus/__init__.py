"""The message bus: Kafka in the stack and the cluster, an in-process twin when embedded."""

from __future__ import annotations

from fetalmlops.common.bus.base import Bus, BusUnavailable, Record, Subscription, Unavailable
from fetalmlops.common.bus.consume import Consumer, Rejected, RetryPolicy, consume, handle
from fetalmlops.common.bus.embedded import EmbeddedBus
from fetalmlops.common.bus.kafka import KafkaBus
from fetalmlops.common.bus.publish import publish_event, read_event
from fetalmlops.common.settings import Backend, Settings

__all__ = [
    "Bus",
    "BusUnavailable",
    "Consumer",
    "EmbeddedBus",
    "KafkaBus",
    "Record",
    "Rejected",
    "RetryPolicy",
    "Subscription",
    "Unavailable",
    "consume",
    "handle",
    "open_bus",
    "publish_event",
    "read_event",
    "retry_policy",
]


def open_bus(settings: Settings) -> Bus:
    if settings.bus is Backend.KAFKA:
        return KafkaBus(
            settings.kafka_bootstrap_servers,
            client_id=settings.service_name,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        )
    return EmbeddedBus(partitions=settings.bus_partitions)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.bus_max_attempts, settings.bus_retry_backoff_s)
