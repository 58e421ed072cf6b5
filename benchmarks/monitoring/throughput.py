"""Throughput: the monitor's prediction consumer against a bare kafka-python consumer.

All read the same prediction events from one topic of one partition on the local stack's
broker, with the client settings of the kernel's (`KafkaBus.subscribe`: at most 100 records a
poll, manual commits). The bare consumer does nothing but read and commit, in two ways: every
record (what the kernel's loop does for a consumer that handles a record at a time) and once
a poll (the fastest at-least-once reading there is). The monitor runs the consumer its service
builds (`fetalmlops.monitor.main.build`) in the kernel's loop (`fetalmlops.common.bus.consume`):
a poll's events parsed, their rows written to PostgreSQL, every full window tested and its
alarm stepped, in one transaction, then one commit.

A rate counts the records after the first mark (the first record or poll handled) over the
time to the last, so joining the consumer group and the first fetch are not counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata
from sqlalchemy import delete, func, select

from fetalmlops.common.bus import KafkaBus, Record, consume
from fetalmlops.common.db import (
    DriftWindow,
    MonitoredVersion,
    ObservedPrediction,
    RetrainingRequest,
    create_engine_for,
    session_scope,
)
from fetalmlops.common.events import SCHEMA_HEADER, schema_name, stamp
from fetalmlops.common.settings import Settings, Topics
from fetalmlops.monitor.main import build
from fetalmlops.monitor.settings import MonitorSettings
from fetalmlops.v1 import models_pb2, predictions_pb2

POLL_RECORDS = 100  # as KafkaBus.subscribe


@dataclass(frozen=True)
class Span:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")


class Clock:
    """Marks (time, records handled so far) as a consumer goes: its span runs from the first
    mark, so joining the group and the first poll's fetch are not counted."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []

    @property
    def done(self) -> int:
        return self.marks[-1][1] if self.marks else 0

    def mark(self, records: int) -> None:
        self.marks.append((time.perf_counter(), self.done + records))

    def span(self) -> Span:
        (start, before), (end, after) = self.marks[0], self.marks[-1]
        return Span(after - before, end - start)


@dataclass(frozen=True)
class WindowRow:
    segment: str
    number: int
    p_value: float
    fired: bool


def private_topics(settings: Settings) -> Topics:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"bench.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(settings.kafka_bootstrap_servers)
    try:
        bus.ensure_topics(list(topics.model_dump().values()), 1)
    finally:
        bus.close()
    return topics


def publish(
    settings: Settings, topic: str, events: Sequence[predictions_pb2.PredictionMade], model: str
) -> None:
    """The events as the inference service publishes them (schema header, keyed by request),
    their model and ids renamed after `model`, so that this run's rows are its own."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
    )
    for original in events:
        event = predictions_pb2.PredictionMade()
        event.CopyFrom(original)
        event.model_name = model
        event.request_id = f"{model}-{original.request_id}"
        event.prediction_id = f"{model}-{original.prediction_id}"
        stamp(event, "inference")
        headers = [(SCHEMA_HEADER, schema_name(event).encode())]
        producer.send(
            topic, key=event.request_id.encode(), value=event.SerializeToString(), headers=headers
        )
    producer.flush()
    producer.close()


def bare(settings: Settings, topic: str, count: int, each: bool) -> Span:
    """kafka-python reading `count` records, committing each record (`each`) or each poll."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=POLL_RECORDS,
    )
    clock = Clock()
    try:
        while clock.done < count:
            for partition, messages in consumer.poll(timeout_ms=500).items():
                for message in messages if each else messages[-1:]:
                    consumer.commit({partition: OffsetAndMetadata(message.offset + 1, "", -1)})
                    if each:
                        clock.mark(1)
                if not each:
                    clock.mark(len(messages))
        return clock.span()
    finally:
        consumer.close(autocommit=False)


def monitored(
    settings: Settings, own: MonitorSettings, storage_uri: str, model: str, count: int
) -> tuple[Span, list[WindowRow]]:
    """The monitor's prediction consumer, as `fetalmlops run monitor` builds it, over `count`
    predictions of `model`, once the version at `storage_uri` (its drift reference in the
    store) was announced to it; the windows it kept."""
    service = build(settings, own)
    topics = settings.topics
    (models,) = [c for c in service.consumers if topics.models_trained in c.topics]
    (loop,) = [c for c in service.consumers if topics.predictions in c.topics]
    trained = models_pb2.ModelTrained(model_name=model, version=1, storage_uri=storage_uri)
    stamp(trained, "trainer")
    models.handler(
        Record(
            topics.models_trained, 0, 0, model, trained.SerializeToString(),
            ((SCHEMA_HEADER, schema_name(trained).encode()),),
        )
    )  # fmt: skip
    clock = Clock()
    handler, batch_handler = loop.handler, loop.batch_handler
    assert batch_handler is not None

    def one(record: Record) -> None:
        handler(record)
        clock.mark(1)

    def many(records: Sequence[Record]) -> None:
        batch_handler(records)
        clock.mark(len(records))

    timed = replace(
        loop, group=f"bench-monitor-{uuid.uuid4().hex[:8]}", handler=one, batch_handler=many
    )
    stop = threading.Event()
    assert service.bus is not None
    worker = threading.Thread(target=consume, args=(service.bus, timed, stop), daemon=True)
    started = time.perf_counter()
    worker.start()
    try:
        while clock.done < count:
            if time.perf_counter() - started > 3600:
                raise TimeoutError(f"the monitor handled {clock.done} of {count} in an hour")
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
        service.bus.close()
    with session_scope(create_engine_for(settings.database_url)) as session:
        kept = session.scalar(select(func.count()).where(ObservedPrediction.model_name == model))
        windows = [
            WindowRow(w.segment, w.number, w.p_value, w.fired)
            for w in session.scalars(
                select(DriftWindow)
                .where(DriftWindow.model_name == model)
                .order_by(DriftWindow.segment, DriftWindow.number)
            )
        ]
        # The run's rows go: the stack's database is shared (its audit entries stay, as ever).
        for table in (ObservedPrediction, DriftWindow, RetrainingRequest, MonitoredVersion):
            session.execute(delete(table).where(table.model_name == model))
    if kept != count:
        raise AssertionError(f"the monitor kept {kept} of {count} predictions")
    return clock.span(), windows
