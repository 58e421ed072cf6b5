"""Where `fetalmlops up` keeps the platform's state and which port each service answers on.

One data directory holds everything a platform on the embedded stand-ins keeps: the catalog,
registry and monitor tables in SQLite, the object store's buckets as directories, the trainer's
runs, the inference service's unpacked versions, the log, the secrets made for it on its first
start, and `endpoints.json`, which clients (the demo) read to find the services. On the real
local stack the database, buckets and topics are the stack's; the data directory keeps the rest.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetalmlops.common.settings import DATA_HOME, Backend, Settings, StoreBackend

SERVICES: tuple[str, ...] = ("ingest", "anonymizer", "trainer", "inference", "monitor")
HOST = "127.0.0.1"  # without tokens on every API, the platform listens on loopback only
DEFAULT_DATA_DIR = DATA_HOME / "up"
# What the operator's token may do on each service: send images, labels and feedback, and ask
# for training. The monitor's reports and dashboard answer without one, on loopback.
SCOPES: dict[str, list[str]] = {
    "ingest": ["images:write", "labels:write", "feedback:write"],
    "trainer": ["training:write"],
}


@dataclass(frozen=True)
class Ports:
    http_base: int = 8100  # ingest, then each service of SERVICES on the next port
    scp: int = 11112  # DICOM's registered port for C-STORE

    def http(self, service: str) -> int:
        return self.http_base + SERVICES.index(service)


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    @property
    def database(self) -> Path:
        return self.data_dir / "fetalmlops.db"

    @property
    def objects(self) -> Path:
        return self.data_dir / "objects"

    @property
    def runs(self) -> Path:
        return self.data_dir / "trainer"

    @property
    def cache(self) -> Path:
        return self.data_dir / "inference-cache"

    @property
    def log(self) -> Path:
        return self.data_dir / "up.log"

    @property
    def secrets(self) -> Path:
        return self.data_dir / "secrets.json"

    @property
    def endpoints(self) -> Path:
        return self.data_dir / "endpoints.json"


@dataclass(frozen=True)
class Secrets:
    anonymizer_secret: str  # the pseudonym key: the same for the data directory's whole life
    token: str  # the operator's bearer token (SCOPES)


@dataclass(frozen=True)
class Choices:
    """What `fetalmlops up` was asked for."""

    layout: Layout
    ports: Ports
    stack: bool  # the real local stack, else the embedded stand-ins
    model: str  # the model the trainer trains and the inference service serves
    plan: Path | None  # its change-control plan (read when first needed), or none
    secrets: Secrets
    database: str | None = None  # on the stack: another database of its PostgreSQL


def embedded_values(layout: Layout) -> dict[str, Any]:
    """``Settings`` values for the embedded stand-ins under ``layout``."""
    return {
        "bus": Backend.EMBEDDED,
        "store": StoreBackend.LOCAL,
        "store_dir": layout.objects,
        "database_url": f"sqlite:///{layout.database}",
    }


def service_settings(service: str, ports: Ports, values: dict[str, Any]) -> Settings:
    """A service's platform settings: its name and port on loopback, on ``values``' clients;
    the rest (log level, topics, tracing) from the environment as for `fetalmlops run`."""
    return Settings(service_name=service, http_host=HOST, http_port=ports.http(service), **values)


def load_or_make_secrets(path: Path) -> Secrets:
    """The data directory's secrets, made (readable by its owner only) on its first start."""
    if path.exists():
        return Secrets(**json.loads(path.read_text(encoding="utf-8")))
    made = Secrets(secrets.token_urlsafe(32), secrets.token_urlsafe(24))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(made.__dict__, handle)
    return made
