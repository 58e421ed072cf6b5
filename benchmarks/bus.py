"""Bus overhead: the kernel's publish_event/consume against bare kafka-python, same broker.

Both sides wait for acks=all on every message and commit every offset, so the ratio is the cost
of what the kernel adds (protobuf envelope, trace context, spans, metrics, retry bookkeeping).

    make bench            # or: .venv/bin/python benchmarks/bus.py --messages 2000
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections.abc import Callable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from rich.progress import Progress

from fetalmlops.common.bus import (
    Bus,
    Consumer,
    EmbeddedBus,
    KafkaBus,
    Record,
    consume,
    publish_event,
)
from fetalmlops.common.settings import Settings
from fetalmlops.stack import stack
from fetalmlops.v1 import images_pb2


def timed(
    label: str, count: int, progress: Progress, work: Callable[[Callable[[], None]], None]
) -> float:
    task = progress.add_task(label, total=count)
    start = time.perf_counter()
    work(lambda: progress.advance(task))
    return count / (time.perf_counter() - start)


def bare_kafka(bootstrap: str, n: int, payload: bytes, progress: Progress) -> tuple[float, float]:
    topic = f"bench.bare.{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_in_flight_requests_per_connection=1
    )

    def produce(tick: Callable[[], None]) -> None:
        for i in range(n):
            producer.send(topic, key=f"k{i}".encode(), value=payload).get(timeout=30)
            tick()

    produced = timed("bare kafka-python produce", n, progress, produce)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )

    def drain(tick: Callable[[], None]) -> None:
        seen = 0
        while seen < n:
            for messages in consumer.poll(timeout_ms=500).values():
                for m in messages:
                    consumer.commit(
                        {
                            TopicPartition(m.topic, m.partition): OffsetAndMetadata(
                                m.offset + 1, "", -1
                            )
                        }
                    )
                    seen += 1
                    tick()

    consumed = timed("bare kafka-python consume+commit", n, progress, drain)
    consumer.close()
    return produced, consumed


def kernel(bus: Bus, name: str, n: int, payload: bytes, progress: Progress) -> tuple[float, float]:
    topic = f"bench.kernel.{uuid.uuid4().hex[:8]}"
    bus.ensure_topics([topic, f"{topic}.dlq"], 3)

    def produce(tick: Callable[[], None]) -> None:
        for i in range(n):
            event = images_pb2.ImageReceived(sha256=f"{i:064x}", media_type="application/dicom")
            event.raw.key = payload.hex()[:64]
            publish_event(bus, topic, event.sha256, event, "bench")
            tick()

    produced = timed(f"{name} publish_event", n, progress, produce)

    def drain(tick: Callable[[], None]) -> None:
        stop, seen = threading.Event(), [0]

        def handler(record: Record) -> None:
            seen[0] += 1
            tick()
            if seen[0] >= n:
                stop.set()

        consume(bus, Consumer([topic], "bench", handler, f"{topic}.dlq"), stop)

    consumed = timed(f"{name} consume (handle+commit)", n, progress, drain)
    return produced, consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args().messages
    payload = os.urandom(1024)
    bootstrap = Settings(**stack.settings_values(None)).kafka_bootstrap_servers
    with Progress() as progress:
        bare = bare_kafka(bootstrap, n, payload, progress)
        ours = kernel(KafkaBus(bootstrap, client_id="bench"), "kernel/kafka", n, payload, progress)
        embedded = kernel(EmbeddedBus(), "kernel/embedded", n, payload, progress)
    print(f"\n{n} messages of ~1 KiB, acks=all, one commit per message")
    print(f"{'path':<22}{'produce msg/s':>15}{'consume msg/s':>15}")
    for label, (p, c) in (
        ("bare kafka-python", bare),
        ("kernel on Kafka", ours),
        ("kernel embedded", embedded),
    ):
        print(f"{label:<22}{p:>15.0f}{c:>15.0f}")
    print(f"kernel/bare ratio: produce {ours[0] / bare[0]:.2f}, consume {ours[1] / bare[1]:.2f}")


if __name__ == "__main__":
    main()
