"""Start, stop and describe the local stack; tell services how to reach it.

``up()`` is idempotent: servers that already run are kept (same pids), the rest are started,
and topics, buckets, users and roles are (re)provisioned from the declared lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import shlex
import urllib.parse
from collections.abc import Iterator

from fetalmlops.common.settings import ENV_PREFIX, Backend, Settings, StoreBackend
from fetalmlops.stack.component import Component, ComponentStatus, Progress
from fetalmlops.stack.config import DATABASE, OWNER_ROLE, SERVICES, StackConfig
from fetalmlops.stack.credentials import MINIO_ROOT_USER, Credentials, load, load_or_create
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.kafka import Kafka
from fetalmlops.stack.minio import MinioServer
from fetalmlops.stack.postgres import Postgres
from fetalmlops.stack.process import HOST, accepts_connections, ensure_ports_free


def components(config: StackConfig, credentials: Credentials | None = None) -> list[Component]:
    settings = Settings()
    credentials = credentials or load(config.credentials_file)
    return [
        Kafka(config, settings),
        MinioServer(config, settings, credentials),
        Postgres(config, credentials),
    ]


@contextlib.contextmanager
def _exclusive(config: StackConfig) -> Iterator[None]:
    """Serialises `up`/`down` on one home, so two terminals cannot start a server twice."""
    config.run.mkdir(parents=True, exist_ok=True)
    with (config.run / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _quiet(_: str) -> None:
    pass


def _labelled(progress: Progress, name: str) -> Progress:
    return lambda message: progress(f"{name}: {message}")


def up(config: StackConfig | None = None, progress: Progress = _quiet) -> list[ComponentStatus]:
    config = config or StackConfig()
    with _exclusive(config):
        stack = components(config, load_or_create(config.credentials_file))
        for component in stack:
            component.install(_labelled(progress, component.name))
        # Every port is checked before anything starts, so a clash leaves nothing half-up.
        to_start = [c for c in stack if c.pid() is None]
        for component in to_start:
            ensure_ports_free(component.ports)
        for component in stack:
            if component in to_start:
                progress(f"{component.name}: starting")
                component.start()
            else:
                progress(f"{component.name}: already running (pid {component.pid()})")
        for component in stack:
            progress(f"{component.name}: waiting until healthy")
            component.wait_healthy()
        for component in stack:
            progress(f"{component.name}: provisioning")
            component.provision()
    return status(config)


def down(config: StackConfig | None = None, progress: Progress = _quiet) -> None:
    config = config or StackConfig()
    with _exclusive(config):
        for component in components(config):
            if component.pid() is not None:
                progress(f"{component.name}: stopping")
            component.stop()


def component_status(component: Component) -> ComponentStatus:
    pid = component.pid()
    # Running means serving: the process is ours and its main port accepts connections.
    running = pid is not None and accepts_connections(component.ports[0].number)
    return ComponentStatus(component.name, running, pid, component.ports, component.log)


def status(config: StackConfig | None = None) -> list[ComponentStatus]:
    return [component_status(c) for c in components(config or StackConfig())]


def settings_values(
    service: str | None = None, config: StackConfig | None = None, database: str = DATABASE
) -> dict[str, object]:
    """Keyword arguments for ``Settings(**values)`` that point ``service`` at this stack.

    ``service=None`` gives the administrator's view: MinIO root and the database owner role.
    ``database`` another database of the stack's PostgreSQL (`scratch_database`).
    """
    if service is not None and service not in SERVICES:
        raise StackError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    config = config or StackConfig()
    creds = load_or_create(config.credentials_file)
    if service is None:
        access_key, secret_key = MINIO_ROOT_USER, creds.minio_root_password
        role = OWNER_ROLE
    else:
        access_key, secret_key = service, creds.minio_secrets[service]
        role = service
    password = urllib.parse.quote(creds.database_passwords[role], safe="")
    return {
        "bus": Backend.KAFKA.value,
        "kafka_bootstrap_servers": f"{HOST}:{config.kafka_port}",
        "bus_partitions": Settings().bus_partitions,
        "store": StoreBackend.MINIO.value,
        "minio_endpoint": f"{HOST}:{config.minio_port}",
        "minio_access_key": access_key,
        "minio_secret_key": secret_key,
        "minio_secure": False,
        "database_url": (
            f"postgresql+psycopg2://{role}:{password}@{HOST}:{config.postgres_port}/{database}"
        ),
    }


@contextlib.contextmanager
def scratch_database(name: str, config: StackConfig | None = None) -> Iterator[str]:
    """A database of the stack's PostgreSQL beside the project's, with the same owner and
    grants, dropped on the way out: for a run that needs a catalog and a registry of its own
    (the whole closed loop trains on everything its catalog holds). Yields ``name``."""
    config = config or StackConfig()
    postgres = Postgres(config, load(config.credentials_file))
    postgres.create_database(name)
    try:
        yield name
    finally:
        postgres.drop_database(name)


def env(service: str | None = None, config: StackConfig | None = None) -> str:
    """The same values as ``export FETALMLOPS_...=...`` lines, for `eval "$(...)"`."""
    lines = []
    for key, value in settings_values(service, config).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"export {ENV_PREFIX}{key.upper()}={shlex.quote(text)}")
    return "\n".join(lines) + "\n"
