"""Ingest throughput and latency, from push to fetal.images.received, on the real stack.

The ingest service runs as its own process (as `fetalmlops run ingest`). Each image is pushed
over REST and timed until its announcement arrives on Kafka. The baseline moves the same bytes
the bare way — a MinIO put plus an acks=all Kafka produce — and is timed until that message
arrives, in the same run; the ratio is what validation, content addressing, the ingest record
and the service itself cost.

    make bench            # or: .venv/bin/python benchmarks/ingest.py --images 60 --workers 4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from fetalmlops.common.db import upgrade
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.stack import stack
from fetalmlops.v1 import images_pb2

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Arrivals:
    """Records when each key shows up on a topic (a consumer thread from the current end)."""

    def __init__(self, bootstrap: str, topic: str, key_of: Callable[[bytes, bytes], str]) -> None:
        self.times: dict[str, float] = {}
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            group_id=f"bench-{time.monotonic_ns()}",
            enable_auto_commit=False,
        )
        while not self.consumer.assignment():
            self.consumer.poll(timeout_ms=200)
        self.key_of, self.stop = key_of, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for messages in self.consumer.poll(timeout_ms=100).values():
                for m in messages:
                    self.times.setdefault(self.key_of(m.key or b"", m.value), time.perf_counter())

    def wait(self, keys: set[str], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not keys <= set(self.times) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def measure(
    name: str, images: list[bytes], workers: int, send: Callable[[bytes], None], arrivals: Arrivals
) -> dict[str, float]:
    sent: dict[str, float] = {}

    def push(data: bytes) -> None:
        sent[hashlib.sha256(data).hexdigest()] = time.perf_counter()
        send(data)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(push, images))
    arrivals.wait(set(sent))
    end = max(arrivals.times[k] for k in sent)
    latencies = np.array([arrivals.times[k] - sent[k] for k in sent]) * 1000
    result = {
        "images/s": len(images) / (end - start),
        "p50 ms": float(np.percentile(latencies, 50)),
        "p95 ms": float(np.percentile(latencies, 95)),
    }
    print(f"{name:<34}" + "".join(f"{v:>12.1f}" for v in result.values()))
    return result


def start_ingest(own: Settings, owner: Settings) -> tuple[subprocess.Popen[bytes], str]:
    upgrade(owner.database_url)
    port = free_port()
    env = {
        **os.environ,
        **{f"FETALMLOPS_{k.upper()}": str(v) for k, v in stack.settings_values("ingest").items()},
    }
    env.update(
        {
            "FETALMLOPS_HTTP_PORT": str(port),
            "FETALMLOPS_INGEST_SCP_PORT": "0",
            "FETALMLOPS_INGEST_TOKENS": json.dumps({TOKEN: ["images:write"]}),
            "FETALMLOPS_LOG_LEVEL": "WARNING",
        }
    )
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("fetalmlops")), "run", "ingest"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("ingest did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    own, owner = (
        Settings(**stack.settings_values("ingest")),
        Settings(**stack.settings_values(None)),
    )
    run_id = time.time_ns()
    print(f"rendering {2 * args.images} phantom DICOM files ...")
    images = [sample_dicom(run_id % 10**9 + i) for i in range(2 * args.images)]
    ours, bare = images[: args.images], images[args.images :]
    size_mb = np.mean([len(d) for d in images]) / 1e6
    print(f"\n{args.images} images of ~{size_mb:.2f} MB, {args.workers} concurrent clients")
    print(f"{'path':<34}{'images/s':>12}{'p50 ms':>12}{'p95 ms':>12}")

    store = MinioStore(
        own.minio_endpoint, own.minio_access_key, own.minio_secret_key.get_secret_value()
    )
    producer = KafkaProducer(bootstrap_servers=own.kafka_bootstrap_servers, acks="all")
    bench_topic = f"bench.ingest.{run_id}"

    def bare_send(data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        store.put(own.buckets.raw, f"bench/{digest}", data)
        producer.send(bench_topic, key=digest.encode(), value=digest.encode()).get(timeout=30)

    producer.send(bench_topic, key=b"warm", value=b"warm").get(timeout=30)  # create the topic
    baseline = measure(
        "baseline: MinIO put + Kafka produce",
        bare,
        args.workers,
        bare_send,
        Arrivals(own.kafka_bootstrap_servers, bench_topic, lambda k, v: k.decode()),
    )
    for data in bare:
        store.delete(own.buckets.raw, f"bench/{hashlib.sha256(data).hexdigest()}")

    process, url = start_ingest(own, owner)
    try:
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        arrivals = Arrivals(
            own.kafka_bootstrap_servers,
            own.topics.images_received,
            lambda k, v: images_pb2.ImageReceived.FromString(v).sha256,
        )
        ingest = measure(
            "ingest: REST upload → announced",
            ours,
            args.workers,
            lambda d: client.post("/v1/images", files={"file": ("x", d)}).raise_for_status(),
            arrivals,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(
        f"\ningest / baseline: throughput {ingest['images/s'] / baseline['images/s']:.2f}, "
        f"p95 latency {ingest['p95 ms'] / baseline['p95 ms']:.2f}"
    )


if __name__ == "__main__":
    main()
