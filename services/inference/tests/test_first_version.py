"""A replica started before its model had any version, as `fetalmlops up` starts one on a fresh
platform: unready, it serves the first promotion of its model's name and follows from there.

The service is what `build` and its followers make of the settings, on the embedded bus and a
directory object store holding real archives; events are published as the registry does.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from kserve.errors import ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.bus import publish_event
from fetalmlops.common.service import health_routes
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.inference.arms import Mode
from fetalmlops.inference.main import Serving, build, follow_changes
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.routes import repository_index
from fetalmlops.inference.settings import InferenceSettings
from fetalmlops.v1 import models_pb2

from .conftest import NAME, VERSION, TorchServeWorker

AWAITING = f"LookupError: waiting for its first promoted version: {NAME}"


def platform(tmp_path: Path) -> Settings:
    # One partition: the events below are read in the order they are published.
    return Settings(
        store_dir=tmp_path / "objects",
        database_url=f"sqlite:///{tmp_path}/db.sqlite",
        bus_partitions=1,
    )


def upload(settings: Settings, layout: ModelLayout, number: int) -> str:
    """The version's files where the trainer puts them; its storage URI."""
    store, bucket = open_store(settings), settings.buckets.models
    store.ensure_buckets([bucket])
    for path in (layout.mar, layout.config_properties):
        key = f"{NAME}/v{number}/{path.relative_to(layout.root).as_posix()}"
        store.put(bucket, key, path.read_bytes())
    return f"s3://{bucket}/{NAME}/v{number}/"


def promotion(name: str, version: int, previous: int, uri: str) -> models_pb2.ModelPromoted:
    return models_pb2.ModelPromoted(
        model_name=name, version=version, previous_version=previous, storage_uri=uri
    )


def publish(serving: Serving, topic: str, event: Message, name: str = NAME) -> None:
    publish_event(serving.bus, topic, name, event, "registry")


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not in {timeout_s} s"
        time.sleep(0.05)


def predict(predictor: PlanePredictor, pngs: list[bytes]) -> Any:
    """A V1 request through KServe's data plane, as its ``:predict`` route hands it over."""
    repository = ModelRepository()
    repository.update(predictor)
    body = {"instances": [{"b64": base64.b64encode(png).decode()} for png in pngs]}
    response, _headers = asyncio.run(DataPlane(repository).infer(predictor.name, body))
    return response


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[tuple[Serving, Settings]]:
    """The service with no model configured, awaiting ``NAME``, its followers running."""
    settings = platform(tmp_path)
    own = InferenceSettings(model_name=NAME, energy_window_s=0)
    serving = build(settings, own, tmp_path / "cache")
    followings = follow_changes(serving, settings, own, tmp_path / "cache")
    try:
        yield serving, settings
    finally:
        for following in followings:
            following.close()
        serving.publisher.close()
        serving.bus.close()


def test_unready_until_the_first_promotion_of_its_name_then_following_on(
    waiting: tuple[Serving, Settings],
    layout: ModelLayout,
    second: ModelLayout,
    resized: ModelLayout,
    pngs: list[bytes],
    torchserve: TorchServeWorker,
) -> None:
    serving, settings = waiting
    [predictor] = serving.predictors
    health = FastAPI()
    health.include_router(health_routes(serving.readiness))
    probes = TestClient(health)

    assert (predictor.name, predictor.ready, predictor.awaiting_first_version) == (
        NAME,
        False,
        True,
    )
    unready = probes.get("/readyz")
    assert unready.status_code == 503 and unready.json()["failures"]["model"] == AWAITING
    with pytest.raises(ModelNotReady):  # HTTP 503, `refusals.FIXED`
        predict(predictor, pngs[:1])
    with pytest.raises(ModelNotReady):
        predictor.metadata()

    promoted = settings.topics.models_promoted
    uris = {n: upload(settings, v, n) for n, v in ((VERSION, layout), (5, second), (6, resized))}
    # Another model's promotion, of a version that loads: if it were served, version 4 after it
    # would be history (neither newer than 5 nor replacing it) and 5 would stay.
    publish(serving, promoted, promotion("another-model", 5, 0, uris[5]), "another-model")
    publish(serving, promoted, promotion(NAME, VERSION, 0, uris[VERSION]))
    eventually(lambda: probes.get("/readyz").status_code == 200, "ready")

    answer = predict(predictor, pngs)
    expected = torchserve.classifier.answer(pngs)
    for prediction, reference in zip(answer["predictions"], expected, strict=True):
        assert (prediction["model_name"], prediction["model_version"]) == (NAME, str(VERSION))
        assert prediction["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)

    publish(serving, promoted, promotion(NAME, 5, VERSION, uris[5]))
    eventually(lambda: predictor.model_version == "5", "version 5 promoted")
    shadow = models_pb2.RolloutChanged(
        model_name=NAME,
        champion_version=5,
        champion_storage_uri=uris[5],
        challenger_version=6,
        challenger_storage_uri=uris[6],
        mode=models_pb2.ROLLOUT_MODE_SHADOW,
        sequence=1,
    )
    publish(serving, settings.topics.models_rollout, shadow)
    eventually(lambda: predictor.serving().mode is Mode.SHADOW, "the shadow of version 6")
    assert predict(predictor, pngs[:1])["predictions"][0]["model_version"] == "5"
    assert asyncio.run(repository_index(registry_of(predictor), b""))[0]["version"] == "5"


def registry_of(predictor: PlanePredictor) -> ModelRepository:
    repository = ModelRepository()
    repository.update(predictor)
    return repository


def test_the_awaited_model_is_listed_unavailable_without_a_version(tmp_path: Path) -> None:
    own = InferenceSettings(model_name=NAME, energy_window_s=0)
    serving = build(platform(tmp_path), own, tmp_path / "cache")
    try:
        [predictor] = serving.predictors
        index = asyncio.run(repository_index(registry_of(predictor), b""))
    finally:
        serving.publisher.close()
        serving.bus.close()
    reason = "awaiting its first promoted version"
    assert index == [{"name": NAME, "version": "", "state": "UNAVAILABLE", "reason": reason}]
    with pytest.raises(ModelNotReady):
        _ = predictor.model_version  # the version routes answer 503


@pytest.mark.parametrize(
    "own",
    [
        InferenceSettings(energy_window_s=0),  # no name: nothing to await
        InferenceSettings(model_name=NAME, reload_on_promotion=False, energy_window_s=0),
    ],
)
def test_without_a_name_or_promotions_followed_nothing_is_awaited(
    tmp_path: Path, own: InferenceSettings
) -> None:
    serving = build(platform(tmp_path), own, tmp_path / "cache")
    serving.publisher.close()
    serving.bus.close()
    assert serving.predictors == []
    with pytest.raises(LookupError, match="FETALMLOPS_INFERENCE_MODEL_NAME"):
        serving.readiness["model"]()


def test_a_predictor_without_a_version_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs the model's name"):
        PlanePredictor(None)
