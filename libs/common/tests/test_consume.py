"""The consumer loop's verdicts on a record, on the embedded bus."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from fetalmlops.common.bus import (
    Consumer,
    EmbeddedBus,
    Record,
    Rejected,
    RetryPolicy,
    Unavailable,
    consume,
    handle,
    read_event,
)
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


def run_until(bus: EmbeddedBus, consumer: Consumer, done: Callable[[], bool]) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=consume, args=(bus, consumer, stop))
    loop.start()
    deadline = time.monotonic() + 10
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    loop.join(5)
    assert done(), "the consumer did not finish in 10 s"


def test_a_batch_handler_takes_a_poll_at_once_and_it_is_committed_once_done() -> None:
    bus = EmbeddedBus(partitions=2)
    for i in range(20):
        bus.publish("in", f"k{i}", b"x")
    batches: list[list[str]] = []

    def one(record: Record) -> None:
        raise AssertionError("no record should be handled alone")

    def many(records: Sequence[Record]) -> None:
        batches.append([r.key or "" for r in records])

    consumer = Consumer(["in"], "g", one, "dead", batch_handler=many)
    run_until(bus, consumer, lambda: sum(map(len, batches)) == 20)
    assert any(len(batch) > 1 for batch in batches)
    assert sorted(key for batch in batches for key in batch) == sorted(f"k{i}" for i in range(20))
    committed = bus.committed("g", "in", 0) + bus.committed("g", "in", 1)
    assert committed == 20, "every record committed, after its batch"


def test_a_failing_batch_is_handled_again_record_by_record_and_the_bad_one_dead_lettered() -> None:
    bus = EmbeddedBus(partitions=1)
    for key in ("a", "b", "bad", "c"):
        bus.publish("in", key, b"x")
    kept: list[str] = []

    def one(record: Record) -> None:
        if record.key == "bad":
            raise Rejected("this record is bad")
        kept.append(record.key or "")

    def many(records: Sequence[Record]) -> None:
        if any(r.key == "bad" for r in records):
            raise Rejected("a record of the batch is bad")
        kept.extend(r.key or "" for r in records)

    consumer = Consumer(["in"], "g", one, "dead", RetryPolicy(2, 0.01), batch_handler=many)
    run_until(bus, consumer, lambda: bus.committed("g", "in", 0) == 4)
    assert kept == ["a", "b", "c"]
    (letter,) = bus.subscribe(["dead"], "watch").poll(1.0)
    assert letter.key == "bad"
    assert letter.header(DLQ_ERROR) == b"Rejected: this record is bad"


def test_a_dependency_down_holds_the_record_until_it_answers_never_dead_letters_it() -> None:
    """An API the handler calls is down for longer than the retry policy's attempts: the
    record is handled again until it answers, then committed; nothing goes to the dead letter."""
    bus = EmbeddedBus(partitions=1)
    bus.publish("in", "request", b"payload")
    calls: list[str] = []

    def handler(record: Record) -> None:
        calls.append(record.key or "")
        if len(calls) <= 3:  # more failures than RetryPolicy(2) would ever allow
            raise Unavailable("the API answered 503")

    consumer = Consumer(["in"], "g", handler, "dead", RetryPolicy(2, 0.01))
    run_until(bus, consumer, lambda: len(calls) == 4)
    assert calls == ["request"] * 4
    assert bus.subscribe(["dead"], "watch").poll(0.2) == []
    assert bus.subscribe(["in"], "g").poll(0.2) == [], "committed once handled"
