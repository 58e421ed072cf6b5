"""The consumer loop's verdicts on a record, on the embedded bus."""

from __future__ import annotations

from fetalmlops.common.bus import Consumer, EmbeddedBus, Record, RetryPolicy, handle, read_event
from fetalmlops.common.bus.consume import DLQ_ATTEMPTS, DLQ_ERROR
from fetalmlops.common.events import SCHEMA_HEADER


def test_an_event_that_cannot_be_read_is_dead_lettered_at_once_not_retried() -> None:
    bus = EmbeddedBus(partitions=1)
    attempts: list[str] = []

    def handler(record: Record) -> None:
        attempts.append(record.key or "")
        read_event(record)

    consumer = Consumer(["in"], "g", handler, "dead", RetryPolicy(3, 0.01))
    unknown = Record("in", 0, 0, "unknown", b"", ((SCHEMA_HEADER, b"fetalmlops.v1.NoSuchEvent"),))
    garbled = Record(
        "in", 0, 1, "garbled", b"\xff\xff", ((SCHEMA_HEADER, b"fetalmlops.v1.ImageReceived"),)
    )
    for record in (unknown, garbled):
        handle(bus, consumer, record)

    assert attempts == ["unknown", "garbled"], "each tried once"
    watcher = bus.subscribe(["dead"], "watch")
    letters = {letter.key: letter for letter in watcher.poll(1.0)}
    assert set(letters) == {"unknown", "garbled"}
    for letter in letters.values():
        assert (letter.header(DLQ_ERROR) or b"").startswith(b"UnknownSchema: ")
        assert letter.header(DLQ_ATTEMPTS) == b"1"
