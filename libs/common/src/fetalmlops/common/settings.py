"""Typed settings read from ``FETALMLOPS_*`` environment variables.

Nested groups use a double underscore: ``FETALMLOPS_TOPICS__IMAGES_RECEIVED``. Every default is
listed in the README (a test keeps the two in step). The defaults select the embedded stand-ins
(in-process bus, directory store, SQLite), so a fresh checkout runs with no servers.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FETALMLOPS_"
DATA_HOME = Path.home() / ".local" / "share" / "fetalmlops"


class Backend(StrEnum):
    EMBEDDED = "embedded"
    KAFKA = "kafka"


class StoreBackend(StrEnum):
    LOCAL = "local"
    MINIO = "minio"


class Topics(BaseModel):
    """Topic names (DESIGN.md §2). The local stack creates exactly these."""

    studies_incoming: str = Field(
        "fetal.studies.incoming", description="Studies pushed by PACS integrations (→ ingest)."
    )
    images_received: str = Field(
        "fetal.images.received", description="Images stored in the raw zone (ingest → anonymizer)."
    )
    images_anonymized: str = Field(
        "fetal.images.anonymized",
        description="De-identified images (anonymizer → catalog, trainer).",
    )
    labels: str = Field(
        "fetal.labels", description="Plane labels (labelling API, importer → catalog)."
    )
    training_requested: str = Field(
        "fetal.training.requested",
        description="Training requests (CLI, monitor, schedule → trainer).",
    )
    models_trained: str = Field(
        "fetal.models.trained", description="New model versions (trainer → inference, monitor)."
    )
    models_promoted: str = Field(
        "fetal.models.promoted",
        description="Promotions to production (registry → inference, monitor).",
    )
    models_rollout: str = Field(
        "fetal.models.rollout",
        description="What each model serves: champion, challenger, shadow or canary "
        "(monitor → inference, registry).",
    )
    predictions: str = Field(
        "fetal.predictions", description="PHI-free prediction events (inference → monitor)."
    )
    feedback: str = Field(
        "fetal.feedback", description="Clinicians' true planes (clinical apps → monitor)."
    )
    inference_energy: str = Field(
        "fetal.inference.energy",
        description="Energy accounts per window of serving (inference → monitor).",
    )
    deadletter: str = Field(
        "fetal.deadletter", description="Messages a consumer gave up on, with the error in headers."
    )
    deadletter_raw: str = Field(
        "fetal.deadletter.raw",
        description="Dead letters of raw-zone consumers: they may hold PHI, like `fetal-raw`.",
    )

    def all(self) -> list[str]:
        return list(self.model_dump().values())


class Buckets(BaseModel):
    """Bucket names (DESIGN.md §2). ``raw`` is the only PHI zone."""

    raw: str = Field(
        "fetal-raw", description="Raw zone with PHI: only ingest and anonymizer hold credentials."
    )
    anonymized: str = Field(
        "fetal-anonymized", description="De-identified DICOM and canonical images."
    )
    datasets: str = Field("fetal-datasets", description="Immutable dataset snapshot manifests.")
    models: str = Field(
        "fetal-models", description="Model versions in the KServe layout (`<model>/v<N>/...`)."
    )

    def all(self) -> list[str]:
        return list(self.model_dump().values())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore", frozen=True
    )

    service_name: str = Field("fetalmlops", description="Name in logs, traces and metrics.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_json: bool = Field(True, description="Structured JSON logs on stdout (else plain text).")
    http_host: str = Field("127.0.0.1", description="Address a service's HTTP server binds.")
    http_port: int = Field(8080, description="Port of a service's HTTP server.")

    bus: Backend = Field(Backend.EMBEDDED, description="`embedded` (in-process) or `kafka`.")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated."
    )
    kafka_session_timeout_ms: int = Field(
        10000,
        description="How long a silent consumer keeps its partitions before the group moves them.",
    )
    kafka_max_poll_interval_ms: int = Field(
        300000,
        description="Longest time one message may take to handle before the group moves its "
        "partition (the trainer, which handles a message by training, sets hours).",
    )
    bus_partitions: int = Field(3, ge=1, description="Partitions per topic (embedded bus, stack).")
    bus_max_attempts: int = Field(
        3, ge=1, description="Handler attempts before a message goes to the dead-letter topic."
    )
    bus_retry_backoff_s: float = Field(
        0.2, ge=0, description="First retry delay; doubles each time."
    )
    topics: Topics = Field(Topics(), description="Topic names.")

    store: StoreBackend = Field(StoreBackend.LOCAL, description="`local` directory or `minio`.")
    store_dir: Path = Field(DATA_HOME / "objects", description="Root of the local object store.")
    minio_endpoint: str = Field("127.0.0.1:19000", description="MinIO host:port.")
    minio_access_key: str = Field("minioadmin", description="This service's MinIO access key.")
    minio_secret_key: SecretStr = Field(
        SecretStr("minioadmin"), description="This service's MinIO secret key."
    )
    minio_secure: bool = Field(False, description="Use TLS to reach MinIO.")
    buckets: Buckets = Field(Buckets(), description="Bucket names.")

    database_url: str = Field(
        f"sqlite:///{DATA_HOME / 'fetalmlops.db'}",
        description="SQLAlchemy URL; use `postgresql+psycopg2://` for PostgreSQL.",
    )

    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`."
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The FETALMLOPS_* variables that give another process (a service, a command) the
    platform these settings point at: its bus, store, database and topics."""
    values = {
        "BUS": settings.bus.value,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "STORE": settings.store.value,
        "STORE_DIR": str(settings.store_dir),
        "MINIO_ENDPOINT": settings.minio_endpoint,
        "MINIO_ACCESS_KEY": settings.minio_access_key,
        "MINIO_SECRET_KEY": settings.minio_secret_key.get_secret_value(),
        "DATABASE_URL": settings.database_url,
    }
    if settings.otlp_endpoint:
        values["OTLP_ENDPOINT"] = settings.otlp_endpoint
    values |= {
        f"TOPICS__{name.upper()}": topic for name, topic in settings.topics.model_dump().items()
    }
    return {f"{ENV_PREFIX}{k}": v for k, v in values.items()}
