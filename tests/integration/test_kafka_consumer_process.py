"""Real processes against the real broker: a SIGKILL before the commit, a SIGTERM shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fetalmlops.common.bus import KafkaBus
from fetalmlops.common.settings import Settings

from .processes import answers, free_port, wait_for

SCRIPT = Path(__file__).with_name("consumer_process.py")

pytestmark = pytest.mark.stack


def calls(out: Path) -> list[str]:
    path = out / "calls"
    return path.read_text().split() if path.exists() else []


def test_killed_consumer_redelivers_and_sigterm_shuts_down_cleanly(
    stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> None:
    bootstrap = stack_settings(None).kafka_bootstrap_servers
    bus = KafkaBus(bootstrap, client_id="test-producer")
    topic, group = f"test.process.{uuid.uuid4().hex[:12]}", f"g-{uuid.uuid4().hex[:8]}"
    bus.ensure_topics([topic, f"{topic}.dlq"], 1)
    bus.publish(topic, "sha-1", b"pixels")

    def start(mode: str, port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), mode, bootstrap, topic, group, str(tmp_path), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    crashed = start("crash", free_port())
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    assert calls(tmp_path) == ["sha-1"] and (tmp_path / "sha-1").read_bytes() == b"pixels"

    port = free_port()
    survivor = start("serve", port)
    try:
        wait_for(lambda: len(calls(tmp_path)) == 2)
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz"))
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0, survivor.stdout.read() if survivor.stdout else ""
    finally:
        survivor.kill()

    assert calls(tmp_path) == ["sha-1", "sha-1"], "redelivered once after the kill"
    assert (tmp_path / "sha-1").read_bytes() == b"pixels", "the replay wrote the same output"
    bus.publish(topic, "sentinel", b"sentinel")
    after = bus.subscribe([topic], group)
    first = next(r for _ in range(60) for r in after.poll(1.0))
    after.close()
    assert first.key == "sentinel", "the survivor committed before shutting down"
    bus.close()
