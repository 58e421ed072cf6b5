"""One contract, two backends: the real Kafka broker of the local stack and the embedded bus.

Every test runs against both, so the embedded stand-in is held to Kafka's semantics.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fetalmlops.common.bus import (
    Bus,
    BusUnavailable,
    Consumer,
    EmbeddedBus,
    KafkaBus,
    Record,
    Rejected,
    RetryPolicy,
    Subscription,
    consume,
    publish_event,
    read_event,
)
from fetalmlops.common.bus.consume import DLQ_ERROR, DLQ_OFFSET, DLQ_PARTITION, DLQ_TOPIC
from fetalmlops.common.bus.kafka import PUBLISH_BOUND_S
from fetalmlops.common.settings import Settings
from fetalmlops.v1 import images_pb2, predictions_pb2

from .processes import free_port

TIMEOUT_S = 30.0


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.stack)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "kafka":
        stack_settings: Callable[[str | None], Settings] = request.getfixturevalue("stack_settings")
        backend: Bus = KafkaBus(stack_settings(None).kafka_bootstrap_servers, client_id="contract")
    else:
        backend = EmbeddedBus(partitions=3)
    yield backend
    backend.close()


@pytest.fixture(params=["embedded", "kafka"])
def unavailable_bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """A bus that cannot take a message: the embedded one closed, Kafka with no broker."""
    if request.param == "kafka":
        backend: Bus = KafkaBus(f"127.0.0.1:{free_port()}", client_id="contract-down")
    else:
        backend = EmbeddedBus(partitions=3)
        backend.close()
    yield backend
    backend.close()


def new_topic(bus: Bus, partitions: int = 3) -> str:
    topic = f"test.contract.{uuid.uuid4().hex[:12]}"
    bus.ensure_topics([topic], partitions)
    return topic


def drain(subscription: Subscription, count: int, timeout_s: float = TIMEOUT_S) -> list[Record]:
    """Poll until ``count`` records arrived (or the time is up); commits nothing."""
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        records.extend(subscription.poll(0.5))
    return records


def next_value(bus: Bus, topic: str, group: str) -> bytes:
    """What the group reads next from a one-partition topic, once a sentinel is appended.

    Waiting for the sentinel (rather than for silence) proves the group really resumed.
    """
    bus.publish(topic, "sentinel", b"sentinel")
    subscription = bus.subscribe([topic], group)
    (record,) = drain(subscription, 1)[:1]
    subscription.close()
    return record.value


def test_produce_then_consume_in_a_group_keeps_per_key_order(bus: Bus) -> None:
    topic = new_topic(bus)
    sent = [(f"study-{i % 3}", f"{i}".encode()) for i in range(12)]
    for key, value in sent:
        bus.publish(topic, key, value, [("h", b"v")])

    subscription = bus.subscribe([topic], "g-order")
    received = drain(subscription, len(sent))
    subscription.close()

    assert sorted((r.key, r.value) for r in received) == sorted(sent)
    assert all(r.header("h") == b"v" for r in received)
    for key in {k for k, _ in sent}:
        mine = [r for r in received if r.key == key]
        assert len({r.partition for r in mine}) == 1, "one key, one partition"
        assert [r.value for r in mine] == [v for k, v in sent if k == key], "order kept per key"


def test_uncommitted_message_is_redelivered_and_processed_idempotently(bus: Bus) -> None:
    topic = new_topic(bus, partitions=1)
    bus.publish(topic, "sha-1", b"image")
    outputs: dict[str, bytes] = {}
    calls: list[str] = []

    def handler(record: Record) -> None:
        calls.append(record.key or "")
        outputs[record.key or ""] = record.value  # keyed output: a replay overwrites, never adds

    crashed = bus.subscribe([topic], "g-crash")
    (first,) = drain(crashed, 1)
    handler(first)
    crashed.close()  # dies after processing, before committing

    survivor = bus.subscribe([topic], "g-crash")
    (again,) = drain(survivor, 1)
    assert (again.partition, again.offset) == (first.partition, first.offset)
    handler(again)
    survivor.commit(again)
    survivor.close()

    assert calls == ["sha-1", "sha-1"]
    assert outputs == {"sha-1": b"image"}
    assert next_value(bus, topic, "g-crash") == b"sentinel", "nothing left uncommitted"


def test_restarted_consumer_resumes_from_the_committed_offset(bus: Bus) -> None:
    topic = new_topic(bus, partitions=1)
    for i in range(5):
        bus.publish(topic, "k", f"m{i}".encode())

    first = bus.subscribe([topic], "g-resume")
    records = drain(first, 5)
    first.commit(records[2])  # m0..m2 done
    first.close()

    bus.publish(topic, "k", b"m5")
    restarted = bus.subscribe([topic], "g-resume")
    rest = drain(restarted, 3)
    restarted.close()
    assert [r.value for r in rest] == [b"m3", b"m4", b"m5"]


def test_another_group_reads_the_topic_independently(bus: Bus) -> None:
    topic = new_topic(bus)
    bus.publish(topic, "k", b"x")
    for group in ("g-a", "g-b"):
        subscription = bus.subscribe([topic], group)
        (record,) = drain(subscription, 1)
        assert record.value == b"x"
        subscription.commit(record)
        subscription.close()


def test_poison_message_goes_to_the_dead_letter_topic_while_the_stream_goes_on(bus: Bus) -> None:
    topic, deadletter = new_topic(bus, partitions=1), new_topic(bus, partitions=1)
    for value in (b"ok-1", b"poison", b"ok-2", b"flaky"):
        bus.publish(topic, value.decode(), value)
    processed: list[bytes] = []
    flaky_attempts: list[int] = []

    def handler(record: Record) -> None:
        if record.value == b"poison":
            raise Rejected("not a DICOM file")
        if record.value == b"flaky":
            flaky_attempts.append(1)
            if len(flaky_attempts) < 2:
                raise ConnectionError("object store unavailable")
        processed.append(record.value)

    stop = threading.Event()
    consumer = Consumer([topic], "g-dlq", handler, deadletter, RetryPolicy(3, 0.01))
    worker = threading.Thread(target=consume, args=(bus, consumer, stop))
    worker.start()
    watcher = bus.subscribe([deadletter], "g-dlq-watch")
    dead = drain(watcher, 1)
    deadline = time.monotonic() + TIMEOUT_S
    while len(processed) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(TIMEOUT_S)
    watcher.close()

    assert processed == [b"ok-1", b"ok-2", b"flaky"], "the stream went on past the poison"
    assert len(flaky_attempts) == 2, "a transient failure is retried"
    (letter,) = dead
    assert letter.value == b"poison" and letter.key == "poison"
    assert letter.header(DLQ_ERROR) == b"Rejected: not a DICOM file"
    assert letter.header(DLQ_TOPIC) == topic.encode()
    assert (letter.header(DLQ_PARTITION), letter.header(DLQ_OFFSET)) == (b"0", b"1")

    assert next_value(bus, topic, "g-dlq") == b"sentinel", "poison and all others were committed"


def test_span_started_before_producing_is_the_parent_of_the_consumer_span(
    bus: Bus, spans: InMemorySpanExporter
) -> None:
    topic, deadletter = new_topic(bus), new_topic(bus)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("upload study") as upload:
        publish_event(bus, topic, "sha", images_pb2.ImageReceived(sha256="ab" * 32), "test")

    received: list[images_pb2.ImageReceived] = []
    stop = threading.Event()

    def handler(record: Record) -> None:
        event = read_event(record)
        assert isinstance(event, images_pb2.ImageReceived)
        received.append(event)
        stop.set()

    consume(bus, Consumer([topic], "g-trace", handler, deadletter), stop)

    assert received[0].sha256 == "ab" * 32 and received[0].meta.producer == "test"
    by_name = {s.name: s for s in spans.get_finished_spans()}
    publish, process = by_name[f"{topic} publish"], by_name[f"{topic} process"]
    assert publish.parent is not None and process.parent is not None
    assert publish.parent.span_id == upload.get_span_context().span_id
    assert process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == upload.get_span_context().trace_id


def test_a_publish_the_bus_cannot_take_fails_fast_and_says_so(unavailable_bus: Bus) -> None:
    """Callers answer "try again" (HTTP 503, DIMSE 0x0110) on BusUnavailable alone, and must
    be able to within a request's patience."""
    for attempt in range(2):  # the first publish opens the producer, the second reuses it
        begun = time.monotonic()
        with pytest.raises(BusUnavailable) as refused:
            unavailable_bus.publish("test.contract.down", "key-with-phi?", b"value")
        assert time.monotonic() - begun <= PUBLISH_BOUND_S <= 10.0, f"attempt {attempt}"
        assert "key-with-phi" not in str(refused.value) and "value" not in str(refused.value)


def test_inference_keeps_predicting_and_counts_events_it_cannot_publish(
    unavailable_bus: Bus,
) -> None:
    from prometheus_client import REGISTRY

    from fetalmlops.inference.publisher import PredictionPublisher

    def dropped() -> float:
        labels = {"reason": "publish_failed"}
        return REGISTRY.get_sample_value("fetalmlops_inference_events_dropped_total", labels) or 0

    before = dropped()
    publisher = PredictionPublisher(unavailable_bus, "test.contract.predictions", "inference")
    publisher.submit([predictions_pb2.PredictionMade(request_id="r-1")])  # returns at once
    publisher.close(timeout_s=PUBLISH_BOUND_S + 5)
    assert not publisher.thread.is_alive()
    assert dropped() == before + 1


def test_a_record_whose_output_the_bus_cannot_take_is_handled_again_not_dead_lettered(
    bus: Bus,
) -> None:
    topic, deadletter = new_topic(bus, partitions=1), new_topic(bus, partitions=1)
    bus.publish(topic, "study", b"study")
    attempts: list[bytes] = []
    stop = threading.Event()

    def handler(record: Record) -> None:
        attempts.append(record.value)
        if len(attempts) == 1:
            raise BusUnavailable(f"{deadletter}: broker restarting")
        stop.set()

    consumer = Consumer([topic], "g-bus-down", handler, deadletter, RetryPolicy(3, 0.01))
    worker = threading.Thread(target=consume, args=(bus, consumer, stop))
    worker.start()
    worker.join(TIMEOUT_S)
    watcher = bus.subscribe([deadletter], "g-bus-down-watch")
    letters = drain(watcher, 1, timeout_s=2)
    watcher.close()

    assert attempts == [b"study", b"study"], "handled again after the bus came back"
    assert letters == [], "the message was never at fault"
    assert next_value(bus, topic, "g-bus-down") == b"sentinel", "committed once handled"
