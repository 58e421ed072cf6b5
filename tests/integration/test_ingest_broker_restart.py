"""A Kafka broker restart in the middle of a stream of REST uploads: nothing lost, nothing
announced twice, and every refusal a prompt 503 with Retry-After that the client acts on.

The broker is a private one (the stack's own Kafka component, with its home under tmp, its own
ports and the shared jar cache), so the shared stack's broker is never touched; ingest runs as
its own process against it, with the shared MinIO and PostgreSQL.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fetalmlops.common.settings import Settings
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.kafka import Kafka
from fetalmlops.v1 import images_pb2

from .ingest_service import RunningIngest, from_beginning, running_ingest
from .processes import free_port

pytestmark = pytest.mark.stack
IMAGES = 60
SENDERS = 3  # modalities sending at once
# The bus answers within 10 s; validation, storing and recording come on top of it.
REFUSAL_BOUND_S = 12.0
OUTAGE_S = 6.0  # the broker stays down this long after it stopped, before it starts again


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Kafka]:
    config = StackConfig(
        home=tmp_path / "kafka-home",
        cache_dir=StackConfig().cache,  # the shared stack's jars: nothing is downloaded
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        kafka_cluster_port=free_port(),
        kafka_heap="256m",
        start_timeout_s=120,
        stop_timeout_s=30,
    )
    kafka = Kafka(config, Settings())
    kafka.install(lambda message: None)
    kafka.start()
    try:
        kafka.wait_healthy()
        kafka.provision()
        yield kafka
    finally:
        kafka.stop()


@dataclass
class Stream:
    """What the client saw: every answer, and how long each refusal took."""

    final: dict[str, int] = field(default_factory=dict)  # sha256 → last status
    answers: Counter[int] = field(default_factory=Counter)
    refusals: list[tuple[int, str | None, float]] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def upload_until_stored(client: httpx.Client, data: bytes, stream: Stream) -> None:
    """One image, sent again after each refusal as its Retry-After says, until it is in."""
    while True:
        begun = time.monotonic()
        response = client.post("/v1/images", files={"file": ("scan.dcm", data)})
        took = time.monotonic() - begun
        with stream.lock:
            stream.sent += 1
            stream.answers[response.status_code] += 1
        if response.status_code in (200, 201):
            with stream.lock:
                stream.final[response.json()["sha256"]] = response.status_code
            return
        retry_after = response.headers.get("retry-after")
        with stream.lock:
            stream.refusals.append((response.status_code, retry_after, took))
        if response.status_code != 503 or retry_after is None:
            return  # the assertions below say what was wrong
        time.sleep(float(retry_after))


def test_a_broker_restart_loses_nothing_and_announces_nothing_twice(
    broker: Kafka, stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> None:
    own = stack_settings("ingest").model_copy(
        update={"kafka_bootstrap_servers": broker.bootstrap_servers}
    )
    images = [sample_dicom(secrets.randbelow(10**9)) for _ in range(IMAGES)]
    stream = Stream()
    with running_ingest(stack_settings(None), own, tmp_path / "ingest.log") as ingest:
        uploads = [
            threading.Thread(target=send_all, args=(ingest, images[n::SENDERS], stream))
            for n in range(SENDERS)
        ]
        for sender in uploads:
            sender.start()
        wait_until(lambda: len(stream.final) >= IMAGES // 4, "a quarter stored before the stop")
        broker.stop()
        stopped_at = len(stream.final)
        time.sleep(OUTAGE_S)
        broker.start()
        broker.wait_healthy()
        for sender in uploads:
            sender.join(timeout=300)
        assert not any(s.is_alive() for s in uploads), "the clients got every image in"
        log = ingest.log.read_text()

    announced = Counter(
        images_pb2.ImageReceived.FromString(r.value).sha256
        for r in from_beginning(own, [own.topics.images_received])
    )
    took = [seconds for _, _, seconds in stream.refusals]
    print(
        f"\nbroker restart during {IMAGES} uploads from {SENDERS} senders: {stream.sent} "
        f"requests, answers {dict(stream.answers)}, {len(stream.refusals)} refusals "
        f"(longest {max(took):.1f} s), {stopped_at} stored before the stop, "
        f"{sum(announced.values())} announcements"
    )
    assert stream.refusals, "the broker's outage was seen by the client"
    assert {(code, after is not None) for code, after, _ in stream.refusals} == {(503, True)}
    assert max(took) <= REFUSAL_BOUND_S, "refused promptly, not after a 30 s hang"
    assert len(stream.final) == IMAGES and set(stream.final.values()) == {201}, "0 lost"
    assert announced == dict.fromkeys(stream.final, 1), "each announced once: 0 duplicates"
    assert "Traceback" not in log, log[-3000:]


def send_all(ingest: RunningIngest, images: list[bytes], stream: Stream) -> None:
    with httpx.Client(base_url=ingest.url, headers=ingest.writer, timeout=60) as client:
        for data in images:
            upload_until_stored(client, data, stream)
            time.sleep(0.1)  # a modality's pace, so the stream spans the whole outage


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
