"""The local stack's whole life on real servers: up → healthy → up again → down → nothing left.

A SECOND stack with its own home and free ports, so it never disturbs the one `make stack-up`
started; it shares that stack's cache (Kafka jars, MinIO binary) so nothing is re-downloaded.
"""

from __future__ import annotations

import io
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka.admin import KafkaAdminClient
from minio import Minio
from minio.error import S3Error

from fetalmlops.common.settings import Settings
from fetalmlops.stack import stack
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.postgres import data_dir
from fetalmlops.stack.process import is_alive, port_in_use

pytestmark = pytest.mark.stack


def free_ports(count: int) -> list[int]:
    holders = [socket.socket() for _ in range(count)]
    try:
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
        return [h.getsockname()[1] for h in holders]
    finally:
        for holder in holders:
            holder.close()


@pytest.fixture
def second_stack(tmp_path: Path) -> Iterator[StackConfig]:
    kafka, controller, cluster, minio, console, postgres = free_ports(6)
    config = StackConfig(
        home=tmp_path / "stack",
        cache_dir=StackConfig().cache,
        kafka_port=kafka,
        kafka_controller_port=controller,
        kafka_cluster_port=cluster,
        minio_port=minio,
        minio_console_port=console,
        postgres_port=postgres,
        start_timeout_s=60,
    )
    yield config
    stack.down(config)
    # As root the cluster lives outside the tmp home (under /var/lib/postgresql).
    shutil.rmtree(data_dir(config), ignore_errors=True)


def minio_client(config: StackConfig, service: str | None) -> Minio:
    settings = Settings(**stack.settings_values(service, config))
    return Minio(
        settings.minio_endpoint,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key.get_secret_value(),
        secure=False,
    )


def assert_kafka_has_the_declared_topics(config: StackConfig) -> None:
    settings = Settings(**stack.settings_values(None, config))
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        assert set(settings.topics.all()) <= set(admin.list_topics())
        described = admin.describe_topics([settings.topics.images_received])
        assert len(described[0]["partitions"]) == settings.bus_partitions
    finally:
        admin.close()


def assert_minio_enforces_the_raw_zone(config: StackConfig) -> None:
    settings = Settings()
    root = minio_client(config, None)
    assert set(settings.buckets.all()) <= {b.name for b in root.list_buckets()}

    raw = settings.buckets.raw
    ingest = minio_client(config, "ingest")
    ingest.put_object(raw, "probe/ingest.bin", io.BytesIO(b"phi"), length=3)
    assert ingest.get_object(raw, "probe/ingest.bin").read() == b"phi"

    trainer = minio_client(config, "trainer")
    with pytest.raises(S3Error) as denied_write:
        trainer.put_object(raw, "probe/trainer.bin", io.BytesIO(b"x"), length=1)
    assert denied_write.value.code == "AccessDenied"
    with pytest.raises(S3Error) as denied_read:
        trainer.get_object(raw, "probe/ingest.bin")
    assert denied_read.value.code == "AccessDenied"


def assert_postgres_serves_owner_and_service_roles(config: StackConfig) -> None:
    owner = sa.create_engine(str(stack.settings_values(None, config)["database_url"]))
    ingest = sa.create_engine(str(stack.settings_values("ingest", config)["database_url"]))
    try:
        with owner.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id serial PRIMARY KEY, note text)"))
        with ingest.begin() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == "ingest"
            # Default privileges: the service writes rows in the owner's (migrated) tables...
            conn.execute(sa.text("INSERT INTO probe (note) VALUES ('ok')"))
            assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar() == 1
        # ...but cannot change the schema.
        with pytest.raises(sa.exc.ProgrammingError), ingest.begin() as conn:
            conn.execute(sa.text("DROP TABLE probe"))
    finally:
        owner.dispose()
        ingest.dispose()


def test_up_is_healthy_idempotent_and_down_leaves_nothing(second_stack: StackConfig) -> None:
    config = second_stack
    first = stack.up(config)
    assert {s.name: s.running for s in first} == {"kafka": True, "minio": True, "postgres": True}
    pids = {s.name: s.pid for s in first}
    ports = [p.number for s in first for p in s.ports]

    assert_kafka_has_the_declared_topics(config)
    assert_minio_enforces_the_raw_zone(config)
    assert_postgres_serves_owner_and_service_roles(config)

    began = time.monotonic()
    again = stack.up(config)
    assert time.monotonic() - began < 15
    assert {s.name: s.pid for s in again} == pids

    stack.down(config)
    assert not any(is_alive(pid) for pid in pids.values() if pid is not None)
    assert [p for p in ports if port_in_use(p)] == []
    assert not any(s.running for s in stack.status(config))
