"""What `fetalmlops cluster status` reports: plain values, filled in by ``cluster.status()``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int | None
    serving: bool
    rss_bytes: int | None
    log: Path

    @property
    def running(self) -> bool:
        return self.pid is not None and self.serving


@dataclass(frozen=True)
class AddonStatus:
    name: str
    namespace: str
    deployment: str
    ready: bool | None  # None: not installed


@dataclass(frozen=True)
class ClusterStatus:
    processes: tuple[ProcessStatus, ...]
    addons: tuple[AddonStatus, ...]
    kubeconfig: Path

    @property
    def running(self) -> bool:
        return all(p.running for p in self.processes)
