"""The service's shell: what `fetalmlops run inference` builds from settings, and its health."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.inference.archive import ArchiveError
from fetalmlops.inference.main import Serving, build
from fetalmlops.inference.server import health_routes
from fetalmlops.inference.settings import InferenceSettings

from .conftest import NAME


def client_for(serving: Serving) -> TestClient:
    app = FastAPI()
    app.include_router(health_routes(serving.readiness))
    return TestClient(app)


def settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db.sqlite")


def test_without_a_model_the_service_is_live_and_unready(tmp_path: Path) -> None:
    serving = build(settings(tmp_path), InferenceSettings(), tmp_path / "cache")
    client = client_for(serving)

    assert serving.predictors == []
    assert client.get("/healthz").json() == {"status": "ok"}
    unready = client.get("/readyz")
    assert unready.status_code == 503
    assert "FETALMLOPS_INFERENCE_MODEL_URI" in unready.json()["failures"]["model"]


def test_the_configured_model_is_loaded_and_ready(layout: ModelLayout, tmp_path: Path) -> None:
    own = InferenceSettings(model_uri=str(layout.root), model_name="planes")
    serving = build(settings(tmp_path), own, tmp_path / "cache")

    [predictor] = serving.predictors
    assert (predictor.name, predictor.model_version, predictor.ready) == ("planes", "4", True)
    assert predictor.archive.model_name == NAME
    assert client_for(serving).get("/readyz").json() == {"status": "ready", "failures": {}}


def test_an_s3_model_uri_is_read_from_the_configured_object_store(
    layout: ModelLayout, tmp_path: Path
) -> None:
    platform = settings(tmp_path)
    store = open_store(platform)
    store.ensure_buckets([platform.buckets.models])
    for path in (layout.mar, layout.config_properties):
        key = f"{NAME}/v4/{path.relative_to(layout.root).as_posix()}"
        store.put(platform.buckets.models, key, path.read_bytes())

    own = InferenceSettings(model_uri=f"s3://{platform.buckets.models}/{NAME}/v4/")
    [predictor] = build(platform, own, tmp_path / "cache").predictors
    assert (predictor.name, predictor.ready) == (NAME, True)
    with pytest.raises(ArchiveError, match="prefix holds no object"):
        absent = InferenceSettings(model_uri=f"s3://{platform.buckets.models}/{NAME}/v5/")
        build(platform, absent, tmp_path / "cache")


def test_a_model_that_does_not_load_stops_the_build(layout: ModelLayout, tmp_path: Path) -> None:
    own = InferenceSettings(model_uri=str(layout.root), device="no-such-device")
    with pytest.raises(ArchiveError, match="does not load on no-such-device"):
        build(settings(tmp_path), own, tmp_path / "cache")
