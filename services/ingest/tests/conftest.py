from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import create_engine_for, upgrade
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.main import build
from fetalmlops.ingest.settings import IngestSettings

TOKENS = {
    "writer": ["images:write"],
    "labeller": ["labels:write"],
    "importer": ["images:write", "labels:write"],
    "reviewer": ["feedback:write"],
}
WRITER = {"Authorization": "Bearer writer"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path}/ingest.db"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    LocalStore(settings.store_dir).ensure_buckets(settings.buckets.all())
    return settings


@pytest.fixture
def limits() -> IngestSettings:
    return IngestSettings(tokens=TOKENS, scp_port=0)


@pytest.fixture
def intake(settings: Settings, limits: IngestSettings) -> Intake:
    return Intake(
        settings,
        limits,
        LocalStore(settings.store_dir),
        EmbeddedBus(),
        create_engine_for(settings.database_url),
    )


@pytest.fixture
def client(settings: Settings, limits: IngestSettings) -> TestClient:
    return TestClient(build(settings, limits).app)
