"""settings_values/env: what a service needs to reach the stack, without any server running."""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

import pytest

from fetalmlops.common.settings import Backend, Settings, StoreBackend
from fetalmlops.stack import stack
from fetalmlops.stack.config import SERVICES, StackConfig
from fetalmlops.stack.errors import StackError


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(
        home=tmp_path / "home", kafka_port=29092, minio_port=29000, postgres_port=25432
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_settings_point_at_the_stack_with_its_own_credentials(
    config: StackConfig, service: str
) -> None:
    settings = Settings(**stack.settings_values(service, config))
    assert settings.bus is Backend.KAFKA
    assert settings.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert settings.store is StoreBackend.MINIO
    assert settings.minio_endpoint == "127.0.0.1:29000"
    assert settings.minio_access_key == service
    assert len(settings.minio_secret_key.get_secret_value()) >= 16
    assert settings.database_url.startswith(f"postgresql+psycopg2://{service}:")
    assert settings.database_url.endswith("@127.0.0.1:25432/fetalmlops")


def test_no_service_means_minio_root_and_database_owner(config: StackConfig) -> None:
    values = stack.settings_values(None, config)
    assert values["minio_access_key"] not in SERVICES
    assert str(values["database_url"]).startswith("postgresql+psycopg2://fetalmlops:")


def test_each_service_gets_a_different_secret(config: StackConfig) -> None:
    secrets = {str(stack.settings_values(s, config)["minio_secret_key"]) for s in SERVICES}
    assert len(secrets) == len(SERVICES)


def test_credentials_are_generated_once_and_private(config: StackConfig) -> None:
    first = stack.settings_values("ingest", config)
    assert first == stack.settings_values("ingest", config)
    assert stat.S_IMODE(config.credentials_file.stat().st_mode) == 0o600


def test_unknown_service_is_refused(config: StackConfig) -> None:
    with pytest.raises(StackError, match="unknown service 'pacs'"):
        stack.settings_values("pacs", config)


def test_env_renders_the_same_values_as_shell_exports(config: StackConfig) -> None:
    exported = {}
    for line in stack.env("trainer", config).splitlines():
        keyword, assignment = line.split(" ", 1)
        assert keyword == "export"
        name, value = assignment.split("=", 1)
        exported[name] = shlex.split(value)[0]
    values = stack.settings_values("trainer", config)
    assert exported == {
        f"FETALMLOPS_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in values.items()
    }
    assert exported["FETALMLOPS_BUS"] == "kafka"
