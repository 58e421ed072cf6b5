"""The ingest service as its own process against the real stack, for channel tests."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from fetalmlops.common.bus import KafkaBus
from fetalmlops.common.db import upgrade
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.v1 import images_pb2

from .processes import ServiceProcess, free_port

FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
WRITER_TOKEN, LABELLER_TOKEN = "test-writer-token", "test-labeller-token"
IMPORTER_TOKEN = "test-importer-token"
CALLING_AE = "FETAL_PACS"


@dataclass(frozen=True)
class RunningIngest:
    url: str
    scp_port: int
    settings: Settings  # ingest's own view of the stack
    log: Path
    pid: int = 0

    @property
    def writer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {WRITER_TOKEN}"}


@contextmanager
def running_ingest(
    owner: Settings, ingest: Settings, log: Path, env: dict[str, str] | None = None
) -> Iterator[RunningIngest]:
    upgrade(owner.database_url)
    scp_port = free_port()
    tokens = {
        WRITER_TOKEN: ["images:write"],
        LABELLER_TOKEN: ["labels:write"],
        IMPORTER_TOKEN: ["images:write", "labels:write"],
    }
    env = {
        **settings_env(ingest),
        "FETALMLOPS_INGEST_SCP_PORT": str(scp_port),
        "FETALMLOPS_INGEST_CALLING_AE_TITLES": json.dumps([CALLING_AE]),
        "FETALMLOPS_INGEST_TOKENS": json.dumps(tokens),
        **(env or {}),
    }
    service = ServiceProcess("ingest", env, log)
    service.start()
    assert service.process is not None
    try:
        yield RunningIngest(service.url, scp_port, ingest, log, service.process.pid)
    finally:
        service.stop()


def private_topics(bootstrap_servers: str, partitions: int = 3) -> Topics:
    """Topics of this run alone (`test.<tag>.<name>`), created on the broker: a test that
    counts announcements must not see another test's, nor add to theirs."""
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(bootstrap_servers)
    try:
        bus.ensure_topics(list(topics.model_dump().values()), partitions)
    finally:
        bus.close()
    return topics


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError("no VmHWM")


class TopicWatch:
    """Messages published on a topic after this watch was created."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
        )
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        self.consumer.assign([TopicPartition(self.topic, p) for p in partitions])
        self.consumer.seek_to_end()
        for partition in self.consumer.assignment():
            self.consumer.position(partition)  # resolve the lazy seek now, before the action

    def fresh(self) -> list[ConsumerRecord]:
        """What arrived since the last look, without waiting (the watch stays open)."""
        return [m for ms in self.consumer.poll(timeout_ms=0).values() for m in ms]

    def collect(
        self, expected: int, quiet_s: float = 3.0, timeout_s: float = 60
    ) -> list[images_pb2.ImageReceived]:
        """Waits for ``expected`` announcements, then ``quiet_s`` more to catch duplicates."""
        events: list[images_pb2.ImageReceived] = []
        deadline, quiet_until = time.monotonic() + timeout_s, None
        try:
            while time.monotonic() < deadline:
                for messages in self.consumer.poll(timeout_ms=500).values():
                    events += messages
                if quiet_until is None and len(events) >= expected:
                    quiet_until = time.monotonic() + quiet_s
                if quiet_until is not None and time.monotonic() > quiet_until:
                    break
        finally:
            self.consumer.close()
        return events


def from_beginning(settings: Settings, topics: Sequence[str]) -> list[ConsumerRecord]:
    """Every record on ``topics`` so far, read from offset 0 without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        found: list[ConsumerRecord] = []
        while any(consumer.position(p) < ends[p] for p in partitions):
            for records in consumer.poll(timeout_ms=500).values():
                found += records
        return found
    finally:
        consumer.close()


class AnnouncementWatch(TopicWatch):
    """Announcements on fetal.images.received made after this watch was created."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.topics.images_received)

    def announced(self, expected: int) -> list[images_pb2.ImageReceived]:
        return [images_pb2.ImageReceived.FromString(r.value) for r in self.collect(expected)]


def counts(events: list[images_pb2.ImageReceived]) -> Counter[str]:
    return Counter(e.sha256 for e in events)
