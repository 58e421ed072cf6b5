"""What the stack needs from each of its servers (Kafka, MinIO, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fetalmlops.stack.config import Port

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    ports: tuple[Port, ...]
    log: Path

    @property
    def port_numbers(self) -> str:
        return ",".join(str(p.number) for p in self.ports)


class Component(Protocol):
    name: str
    log: Path

    @property
    def ports(self) -> tuple[Port, ...]: ...

    def pid(self) -> int | None:
        """The server's pid when it runs and is ours, else None."""

    def install(self, progress: Progress) -> None:
        """Fetches or builds the server into the cache; a no-op when it is already there."""

    def start(self) -> None:
        """Initialises state on first use and launches the server without waiting for it."""

    def wait_healthy(self) -> None:
        """Blocks until the server answers; raises StackError pointing at its log."""

    def provision(self) -> None:
        """Creates topics / buckets / users / roles idempotently."""

    def stop(self) -> None:
        """Stops the server and everything it forked."""
