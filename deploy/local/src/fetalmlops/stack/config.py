"""Where the local stack lives and which loopback ports it takes.

Read from ``FETALMLOPS_STACK_*`` environment variables, e.g. ``FETALMLOPS_STACK_KAFKA_PORT``.
Everything the stack downloads, builds or stores is under ``home`` (outside the repository), so
a second ``up`` reuses it and takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FETALMLOPS_STACK_"

# Each one gets its own MinIO user and PostgreSQL role (least privilege, DESIGN.md §5).
SERVICES: tuple[str, ...] = ("ingest", "anonymizer", "trainer", "inference", "monitor")
DATABASE = "fetalmlops"
# Owns the database and runs the Alembic migrations; services get only DML on its tables.
OWNER_ROLE = "fetalmlops"


@dataclass(frozen=True)
class Port:
    """A loopback port a component listens on, and the setting that moves it."""

    component: str
    purpose: str
    number: int
    setting: str

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.setting.upper()


class StackConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    home: Path = Field(
        Path.home() / ".cache" / "fetalmlops",
        description="Data, logs, pidfiles, generated credentials (and, by default, the cache).",
    )
    cache_dir: Path | None = Field(
        None,
        description="Kafka jars and the MinIO binary; defaults to `home`. Point a second "
        "stack at the first one's to skip downloading and building.",
    )
    kafka_port: int = Field(19092, description="Kafka broker (PLAINTEXT listener).")
    kafka_controller_port: int = Field(19093, description="Kafka KRaft controller listener.")
    kafka_cluster_port: int = Field(
        19094,
        description="Kafka listener for pods of the local cluster: on loopback, advertised at "
        "`node_address`, where `fetalmlops cluster up` forwards it.",
    )
    minio_port: int = Field(19000, description="MinIO S3 API.")
    minio_console_port: int = Field(19001, description="MinIO web console.")
    postgres_port: int = Field(15432, description="PostgreSQL.")
    node_address: str = Field(
        "10.250.0.1",
        description="The local cluster's node address (`fetalmlops cluster`), at which pods "
        "reach the stack's Kafka, MinIO and PostgreSQL.",
    )
    kafka_heap: str = Field("512m", description="JVM heap of the Kafka broker (-Xmx).")
    start_timeout_s: float = Field(120.0, description="Time a component gets to become healthy.")
    stop_timeout_s: float = Field(30.0, description="Grace period after SIGTERM before SIGKILL.")

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.home

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def conf(self) -> Path:
        return self.home / "conf"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    def port(self, component: str, purpose: str, setting: str) -> Port:
        return Port(component, purpose, int(getattr(self, setting)), setting)
