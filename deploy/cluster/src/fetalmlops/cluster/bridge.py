"""The local stack, reachable from pods: its ports forwarded from the node address to loopback.

The stack's servers listen on loopback only. A pod reaches this machine at the node address
(the cluster puts it on ``lo``), so one ``socat`` per port forwards ``node:port`` to
``127.0.0.1:port``: MinIO's S3 API, PostgreSQL, and Kafka's ``CLUSTER`` listener, which
advertises the node address so that every connection a client opens after bootstrapping comes
back through the bridge as well. The forwarders are daemons with pidfiles like the stack's.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import HOST, Daemon, accepts_connections, wait_until

SOCAT_HINT = "install socat (`apt-get install -y socat`, in `make system-packages`)."


@dataclass(frozen=True)
class Forward:
    """``address:port`` forwarded to the same port on loopback."""

    name: str
    address: str
    port: int

    def argv(self, socat: str, lockfile: Path) -> list[str]:
        # -L: the lock file names the forwarder in its command line (the daemon's marker).
        return [
            socat,
            "-L",
            str(lockfile),
            f"TCP-LISTEN:{self.port},bind={self.address},fork,reuseaddr",
            f"TCP:{HOST}:{self.port}",
        ]


def forwards(stack: StackConfig) -> tuple[Forward, ...]:
    node = stack.node_address
    return (
        Forward("kafka", node, stack.kafka_cluster_port),
        Forward("minio", node, stack.minio_port),
        Forward("postgres", node, stack.postgres_port),
    )


@dataclass(frozen=True)
class Bridge:
    stack: StackConfig
    run: Path  # pidfiles and lock files
    logs: Path

    def daemon(self, forward: Forward) -> Daemon:
        return Daemon(
            f"bridge-{forward.name}",
            self.run / f"bridge-{forward.name}.pid",
            self.logs / f"bridge-{forward.name}.log",
            marker=str(self.lockfile(forward)),
        )

    def lockfile(self, forward: Forward) -> Path:
        return self.run / f"bridge-{forward.name}.lock"

    def up(self, timeout_s: float = 10.0) -> None:
        """Starts each forwarder not running yet (the node address must be on ``lo``)."""
        socat = shutil.which("socat")
        if socat is None:
            raise StackError(f"`socat` was not found on PATH: {SOCAT_HINT}")
        for forward in forwards(self.stack):
            daemon = self.daemon(forward)
            if daemon.pid() is not None:
                continue
            self.lockfile(forward).unlink(missing_ok=True)  # left by a killed forwarder
            daemon.spawn(forward.argv(socat, self.lockfile(forward)))
            self.wait(forward, daemon, timeout_s)

    @staticmethod
    def wait(forward: Forward, daemon: Daemon, timeout_s: float) -> None:
        wait_until(
            lambda: accepts_connections(forward.port, forward.address),
            name=daemon.name,
            log=daemon.log,
            timeout_s=timeout_s,
            alive=lambda: daemon.pid() is not None,
        )

    def down(self, timeout_s: float = 5.0) -> None:
        for forward in forwards(self.stack):
            self.daemon(forward).stop(timeout_s)
            self.lockfile(forward).unlink(missing_ok=True)

    def pids(self) -> dict[str, int | None]:
        return {f"bridge-{f.name}": self.daemon(f).pid() for f in forwards(self.stack)}
