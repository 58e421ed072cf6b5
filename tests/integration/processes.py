"""Helpers for tests that run services as real processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout_s: float = 2) -> tuple[int, str]:
    """Status and body of a GET, 4xx/5xx included; raises OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met in {timeout_s} s")
        time.sleep(0.2)


def answers(url: str, status: int = 200) -> bool:
    try:
        return get(url)[0] == status
    except OSError:
        return False


class ServiceProcess:
    """`fetalmlops run <service>` as a real process, started, signalled and restarted by tests."""

    def __init__(self, service: str, env: dict[str, str], log: Path) -> None:
        self.service, self.log, self.port = service, log, free_port()
        self.env = {**os.environ, **env, "FETALMLOPS_HTTP_PORT": str(self.port)}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60, probe: str = "/readyz") -> None:
        """Starts the process and waits until ``probe`` answers 200."""
        with self.log.open("a") as output:
            command = [str(Path(sys.executable).with_name("fetalmlops")), "run", self.service]
            self.process = subprocess.Popen(command, env=self.env, stdout=output, stderr=output)
        process = self.process

        def ready() -> bool:
            assert process.poll() is None, self.log.read_text()[-3000:]
            return answers(f"{self.url}{probe}")

        try:
            wait_for(ready, timeout_s, f"{self.service} ready")
        except BaseException:
            self.stop(timeout_s=5)  # a start that failed leaves no process behind
            raise

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.process.kill()
            self.process = None


SERVE = [str(Path(sys.executable).with_name("fetalmlops")), "serve"]


@dataclass(frozen=True)
class Serving:
    """A `fetalmlops serve` process, answering on ``url``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    startup_s: float


@contextmanager
def serving(
    model_dir: Path, log: Path, env: dict[str, str] | None = None, ready: str = "/readyz"
) -> Iterator[Serving]:
    """`fetalmlops serve --model-dir` on a free loopback port until the block ends; SIGTERM
    must stop it with exit code 0."""
    port, begun = free_port(), time.monotonic()
    command = [*SERVE, "--model-dir", str(model_dir), "--http-port", str(port)]
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=output, stderr=output
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        return answers(f"{url}{ready}")

    try:
        wait_for(up, 90, "fetalmlops serve ready")
        yield Serving(url, process, log, time.monotonic() - begun)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        process.kill()
        process.wait()
