"""Publishing and reading typed events: schema header, trace context, producer span."""

from __future__ import annotations

from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from fetalmlops.common.bus.base import Bus, Record
from fetalmlops.common.events import SCHEMA_HEADER, UnknownSchema, decode, schema_name, stamp
from fetalmlops.common.telemetry.metrics import PUBLISHED
from fetalmlops.common.telemetry.tracing import inject


def publish_event(bus: Bus, topic: str, key: str, event: Message, producer: str) -> None:
    """Stamp ``event`` and publish it under ``key``; returns once it is durable."""
    stamp(event, producer)
    schema = schema_name(event)
    with trace.get_tracer(__name__).start_as_current_span(
        f"{topic} publish",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": topic},
    ):
        headers = [(SCHEMA_HEADER, schema.encode()), *inject()]
        bus.publish(topic, key, event.SerializeToString(), headers)
    PUBLISHED.labels(topic).inc()


def read_event(record: Record) -> Message:
    """Decode a record by its schema header; ``UnknownSchema`` for anything else."""
    schema = record.header(SCHEMA_HEADER)
    if schema is None:
        raise UnknownSchema(f"no {SCHEMA_HEADER} header")
    return decode(record.value, schema.decode(errors="replace"))
