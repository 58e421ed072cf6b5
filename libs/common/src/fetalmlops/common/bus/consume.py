"""The consumer loop every service uses: at-least-once, bounded retries, dead-letter topic.

A record's offset is committed only after its handler returned — that is, after the handler's
output (object, row, event with acks=all) is durable — or after the record was safely copied
to the dead-letter topic. A crash anywhere before that means redelivery, so handlers must be
idempotent (DESIGN.md §2). When the bus itself is unavailable (the handler's output or the dead
letter could not be published), or anything else the handler needs (``Unavailable``: an API
it calls), the record is neither dead-lettered nor skipped: it is handled again once that is
back, as the message was never at fault.

A consumer may also take a whole poll at once (``batch_handler``): one transaction and one
commit per partition for up to a poll's records, where a record at a time pays a round trip
to the database and one to the broker for each. A batch that fails for any reason but the bus
is handled again record by record by ``handler``, so a bad record is retried and dead-lettered
alone and the others are kept; the batch handler must therefore leave nothing behind when it
raises (one transaction) and be idempotent like any handler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from fetalmlops.common.bus.base import Bus, Record, Unavailable
from fetalmlops.common.events import UnknownSchema
from fetalmlops.common.telemetry.metrics import HANDLING_SECONDS, MESSAGES
from fetalmlops.common.telemetry.tracing import extract, inject

log = logging.getLogger(__name__)

Handler = Callable[[Record], None]
BatchHandler = Callable[[Sequence[Record]], None]

# Dead-letter headers (DESIGN.md §2): why, and where the message came from.
DLQ_ERROR = "dlq-error"
DLQ_TOPIC = "dlq-original-topic"
DLQ_PARTITION = "dlq-original-partition"
DLQ_OFFSET = "dlq-original-offset"
DLQ_GROUP = "dlq-consumer-group"
DLQ_ATTEMPTS = "dlq-attempts"
_MAX_ERROR_CHARS = 1000
# Between two tries of a record while the bus is unavailable.
BUS_RETRY_S = 1.0


class Rejected(Exception):
    """The message itself is bad (malformed, not allowed): dead-letter it without retrying.

    The message text becomes the dead-letter reason; it must describe the problem without
    quoting PHI from the input.
    """


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.2

    def delay(self, attempt: int) -> float:
        return self.backoff_s * 2.0 ** (attempt - 1)


@dataclass(frozen=True)
class Consumer:
    """A handler bound to its topics and group, and where its failures go."""

    topics: Sequence[str]
    group: str
    handler: Handler
    deadletter_topic: str
    retry: RetryPolicy = RetryPolicy()
    batch_handler: BatchHandler | None = None  # the same work for a whole poll of records


def consume(bus: Bus, consumer: Consumer, stop: threading.Event, poll_s: float = 0.5) -> None:
    """Run ``consumer`` until ``stop`` is set; leave the group cleanly on the way out."""
    subscription = bus.subscribe(consumer.topics, consumer.group)
    try:
        while not stop.is_set():
            records = subscription.poll(poll_s)
            if consumer.batch_handler is not None and len(records) > 1:
                outcome = handled_batch(bus, consumer, records, stop)
                if outcome is None:
                    return  # Stopped while the bus was down: nothing is committed.
                if outcome:
                    for last in last_of_each_partition(records):
                        subscription.commit(last)
                    continue
            for record in records:
                if not handled(bus, consumer, record, stop):
                    return  # Stopped while the bus was down: the record stays uncommitted.
                subscription.commit(record)
                if stop.is_set():
                    break  # The rest of the batch is uncommitted and will be redelivered.
    finally:
        subscription.close()


def handled(bus: Bus, consumer: Consumer, record: Record, stop: threading.Event) -> bool:
    """``handle`` until the bus takes its outcome; False if ``stop`` came first."""
    while True:
        try:
            handle(bus, consumer, record)
            return True
        except Unavailable as exc:
            log.warning(
                "unavailable; the record will be handled again",
                extra={"topic": record.topic, "error": type(exc).__name__},
            )
            if stop.wait(BUS_RETRY_S):
                return False


def handled_batch(
    bus: Bus, consumer: Consumer, records: Sequence[Record], stop: threading.Event
) -> bool | None:
    """The batch handler on ``records`` until the bus takes its outcome: True when it
    returned, False when it raised (the records are to be handled one by one), None when
    ``stop`` came while the bus was down."""
    assert consumer.batch_handler is not None
    tracer = trace.get_tracer(__name__)
    topics = sorted({record.topic for record in records})
    published = [span_context(record) for record in records]
    while True:
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(
                f"{' '.join(topics)} process",
                kind=SpanKind.CONSUMER,
                links=[Link(context) for context in published if context.is_valid],
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": " ".join(topics),
                    "messaging.consumer.group.name": consumer.group,
                    "messaging.batch.message_count": len(records),
                },
            ):
                consumer.batch_handler(records)
        except Unavailable as exc:
            log.warning(
                "unavailable; the batch will be handled again", extra={"error": type(exc).__name__}
            )
            if stop.wait(BUS_RETRY_S):
                return None
            continue
        except Exception as exc:
            log.warning(
                "batch failed; its records are handled one by one",
                extra={"records": len(records), "error": type(exc).__name__},
            )
            return False
        share = (time.perf_counter() - started) / len(records)  # each message's part
        for record in records:
            MESSAGES.labels(record.topic, consumer.group, "processed").inc()
            HANDLING_SECONDS.labels(record.topic, consumer.group).observe(share)
        return True


def last_of_each_partition(records: Sequence[Record]) -> list[Record]:
    last: dict[tuple[str, int], Record] = {}
    for record in records:
        last[(record.topic, record.partition)] = record
    return list(last.values())


def span_context(record: Record) -> trace.SpanContext:
    """The span that published ``record`` (invalid when it carries none)."""
    return trace.get_current_span(extract(record.headers)).get_span_context()


def handle(bus: Bus, consumer: Consumer, record: Record) -> None:
    """Run the handler with retries; dead-letter the record when it is rejected or exhausted.

    Raises ``Unavailable`` when the bus could not take the handler's output (or the handler
    found something else it needs down), and only when
    the dead-letter publish itself fails otherwise, so the record is not committed.
    """
    with (
        HANDLING_SECONDS.labels(record.topic, consumer.group).time(),
        consumer_span(record, consumer.group) as span,
    ):
        for attempt in range(1, consumer.retry.max_attempts + 1):
            try:
                consumer.handler(record)
                MESSAGES.labels(record.topic, consumer.group, "processed").inc()
                return
            except (Rejected, UnknownSchema) as exc:
                # Neither the handler's verdict nor bytes that do not parse change on a retry.
                error: Exception = exc
                break
            except Unavailable:
                # Not the message's fault (and the dead letter may be on the bus that is down).
                MESSAGES.labels(record.topic, consumer.group, "unavailable").inc()
                raise
            except Exception as exc:
                error = exc
                log.warning(
                    "handler failed",
                    extra={"topic": record.topic, "attempt": attempt, "error": type(exc).__name__},
                )
                if attempt < consumer.retry.max_attempts:
                    MESSAGES.labels(record.topic, consumer.group, "retried").inc()
                    time.sleep(consumer.retry.delay(attempt))
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        deadletter(bus, consumer, record, error, attempt)


def consumer_span(record: Record, group: str) -> AbstractContextManager[trace.Span]:
    """The span of handling ``record`` in ``group``, a child of the span that published it."""
    return trace.get_tracer(__name__).start_as_current_span(
        f"{record.topic} process",
        context=extract(record.headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.consumer.group.name": group,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        },
    )


def deadletter_reason(error: Exception) -> str:
    """Why a record was given up on: our own exceptions by their message, which is written not
    to quote the input; a library's by its type alone, since libraries quote their input
    (SQLAlchemy its parameters, decoders their bytes) and the input may be a patient's file."""
    if type(error).__module__.startswith("fetalmlops."):
        return f"{type(error).__name__}: {error}"[:_MAX_ERROR_CHARS]
    return f"{type(error).__name__} (its message is not kept: it may quote the input)"


def deadletter(
    bus: Bus, consumer: Consumer, record: Record, error: Exception, attempts: int
) -> None:
    reason = deadletter_reason(error)
    provenance = [
        (DLQ_ERROR, reason.encode()),
        (DLQ_TOPIC, record.topic.encode()),
        (DLQ_PARTITION, str(record.partition).encode()),
        (DLQ_OFFSET, str(record.offset).encode()),
        (DLQ_GROUP, consumer.group.encode()),
        (DLQ_ATTEMPTS, str(attempts).encode()),
    ]
    original = [(k, v) for k, v in record.headers if k not in {"traceparent", "tracestate"}]
    bus.publish(
        consumer.deadletter_topic,
        record.key or "",
        record.value,
        [*original, *provenance, *inject()],
    )
    MESSAGES.labels(record.topic, consumer.group, "deadlettered").inc()
    log.error(
        "message dead-lettered",
        extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
    )
