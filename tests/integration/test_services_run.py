"""Every service starts (`python -m`, `fetalmlops run`), serves health and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .processes import free_port, get

SERVICES = ["ingest", "anonymizer", "trainer", "inference", "monitor"]
FETALMLOPS = Path(sys.executable).with_name("fetalmlops")


def service_env(port: int, tmp_path: Path) -> dict[str, str]:
    """A service on ``port`` with embedded stand-ins under ``tmp_path`` (no stack needed)."""
    return {
        **os.environ,
        "FETALMLOPS_HTTP_PORT": str(port),
        "FETALMLOPS_STORE_DIR": str(tmp_path / "objects"),
        "FETALMLOPS_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "FETALMLOPS_INGEST_SCP_PORT": str(free_port()),
    }


# Images start `python -m fetalmlops.<service>`; the CLI dispatches through the same entry point.
LAUNCHES = [("python -m", s) for s in SERVICES] + [("fetalmlops run", "ingest")]


@pytest.mark.parametrize(("launcher", "service"), LAUNCHES)
def test_service_serves_health_and_stops_on_sigterm(
    service: str, launcher: str, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(port, tmp_path)
    if launcher == "python -m":
        command = [sys.executable, "-m", f"fetalmlops.{service}"]
    else:
        command = [str(FETALMLOPS), "run", service]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "service did not come up"
                time.sleep(0.2)
        assert (status, body) == (200, '{"status":"ok"}')
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503  # buckets not created here
        assert get(f"http://127.0.0.1:{port}/openapi.json")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    logs = process.stdout.read() if process.stdout else ""
    assert f'"service": "{service}"' in logs, "structured JSON logs carry the service name"


def test_sighup_runs_the_service_again_in_place(tmp_path: Path) -> None:
    """What Tilt's live update does after syncing sources: the same pid serves again, started
    anew (its start-up logged twice), and SIGTERM still stops it cleanly."""
    port = free_port()
    env = service_env(port, tmp_path)
    log = tmp_path / "ingest.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fetalmlops.ingest"], env=env, stdout=output, stderr=output
        )

    def serving() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait(serving, 60)
        process.send_signal(signal.SIGHUP)
        wait(lambda: log.read_text().count('"service starting"') == 2 and serving(), 60)
        assert process.poll() is None, "the same process serves again"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    text = log.read_text()
    assert text.count('"service stopped"') == 2 and "service starting again" in text


def wait(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.2)
