"""`POST /v1/training-requests` publishes the `TrainingRequested` the trainer's consumer runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fetalmlops.common.bus import Bus, EmbeddedBus, Record, read_event
from fetalmlops.common.db import ModelVersion, create_engine_for, session_scope, upgrade
from fetalmlops.common.service import create_app
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.trainer import catalog, local
from fetalmlops.trainer.api import add_routes
from fetalmlops.trainer.main import Trainer, build
from fetalmlops.trainer.platform import Platform
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import Filters, SplitSpec, snapshot
from fetalmlops.v1 import models_pb2, training_pb2

TOKENS = {"ml-engineer": ["training:write"], "reader": ["reports:read"]}
ENGINEER = {"Authorization": "Bearer ml-engineer"}
PATH = "/v1/training-requests"


def site(root: Path) -> Platform:
    url = f"sqlite:///{root}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=root / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    return Platform(settings, store, EmbeddedBus(partitions=1), create_engine_for(url))


def api(bus: Bus, own: TrainerSettings, settings: Settings | None = None) -> TestClient:
    app = create_app("trainer", {})
    add_routes(app, bus, settings or Settings(), own)
    return TestClient(app)


def requested(bus: Bus, topic: str) -> list[Record]:
    assert isinstance(bus, EmbeddedBus)
    subscription = bus.subscribe([topic], "test-requests")
    records = subscription.poll(0.2)
    subscription.close()
    return records


def test_a_request_is_published_with_a_fresh_id_and_every_field(tmp_path: Path) -> None:
    bus, topic = EmbeddedBus(), Settings().topics.training_requested
    body = {
        "model_name": "planes-portable",
        "backbone": "resnet18",
        "strategy": "linear_probe",
        "hyperparameters": {"epochs": 12, "learning_rate": 3e-4, "seed": 7, "input_size": 96},
        "cohorts": ["highend-a", "highend-b"],
        "held_out_cohorts": ["portable"],
        "snapshot_id": "ds-0123456789abcdef",
    }
    client = api(bus, TrainerSettings(tokens=TOKENS))

    first = client.post(PATH, json=body, headers=ENGINEER)
    again = client.post(PATH, json=body, headers=ENGINEER)

    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    assert first.json()["request_id"] != again.json()["request_id"], "each request its own id"
    # Two keys, two partitions maybe: a poll need not return them in publication order.
    by_key = {record.key: record for record in requested(bus, topic)}
    assert set(by_key) == {first.json()["request_id"], again.json()["request_id"]}
    record = by_key[first.json()["request_id"]]
    event = read_event(record)
    assert isinstance(event, training_pb2.TrainingRequested)
    assert record.key == event.request_id
    assert event.reason == "api" and event.meta.producer == "trainer" and event.meta.event_id
    assert (event.model_name, event.backbone, event.snapshot_id) == (
        "planes-portable", "resnet18", "ds-0123456789abcdef",
    )  # fmt: skip
    assert event.strategy == training_pb2.TRAINING_STRATEGY_LINEAR_PROBE
    given = event.hyperparameters
    assert (given.epochs, given.learning_rate, given.seed, given.input_size) == (12, 3e-4, 7, 96)
    assert not given.HasField("batch_size") and not given.HasField("patience")
    assert list(event.cohorts) == ["highend-a", "highend-b"]
    assert list(event.held_out_cohorts) == ["portable"]
    assert not event.HasField("drift") and event.fold == 0


def test_an_empty_request_leaves_everything_to_the_trainer() -> None:
    bus = EmbeddedBus()
    response = api(bus, TrainerSettings(tokens=TOKENS)).post(PATH, json={}, headers=ENGINEER)
    assert response.status_code == 202, response.text
    (record,) = requested(bus, Settings().topics.training_requested)
    event = read_event(record)
    assert isinstance(event, training_pb2.TrainingRequested)
    assert event.model_name == event.backbone == event.snapshot_id == ""
    assert event.strategy == training_pb2.TRAINING_STRATEGY_UNSPECIFIED
    assert not any(event.hyperparameters.HasField(f) for f in ("epochs", "seed", "input_size"))


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"backbone": "alexnet"}, "backbone"),
        ({"strategy": "freeze_everything"}, "strategy"),
        ({"hyperparameters": {"epochs": 0}}, "epochs"),
        ({"hyperparameters": {"epochs": 100_000}}, "epochs"),
        ({"hyperparameters": {"learning_rate": -1}}, "learning_rate"),
        ({"hyperparameters": {"seed": 2**32}}, "seed"),
        ({"hyperparameters": {"input_size": 8}}, "input_size"),
        ({"hyperparameters": {"epoch": 3}}, "<key>"),  # a typo is not a default
        ({"snapshot_id": "latest"}, "snapshot_id"),
        ({"model_name": "../planes"}, "model_name"),
        ({"cohorts": ["Jane Doe's scans"]}, 0),
        ({"held_out_cohorts": [f"c{i}" for i in range(65)]}, "held_out_cohorts"),
    ],
)
def test_bad_requests_are_refused_with_a_reason_and_never_published(
    body: dict[str, Any], where: str | int
) -> None:
    bus = EmbeddedBus()
    response = api(bus, TrainerSettings(tokens=TOKENS)).post(PATH, json=body, headers=ENGINEER)

    assert response.status_code == 422, body
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == where and error["msg"]
    assert "alexnet" not in response.text and "Jane" not in response.text
    assert requested(bus, Settings().topics.training_requested) == []


def test_under_a_plan_only_its_model_is_trained(tmp_path: Path) -> None:
    bus = EmbeddedBus()
    own = TrainerSettings(tokens=TOKENS, model_name="planes", plan=tmp_path / "plan.yaml")
    client = api(bus, own)

    other = client.post(PATH, json={"model_name": "other"}, headers=ENGINEER)
    assert other.status_code == 422 and "change-control plan of 'planes'" in other.json()["detail"]
    assert client.post(PATH, json={"model_name": "planes"}, headers=ENGINEER).status_code == 202
    assert client.post(PATH, json={}, headers=ENGINEER).status_code == 202


def test_requests_need_the_training_scope_on_the_service(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db")
    client = TestClient(build(settings, TrainerSettings(tokens=TOKENS)).app)

    missing = client.post(PATH, json={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    unknown = client.post(PATH, json={}, headers={"Authorization": "Bearer guess"})
    assert unknown.status_code == 401 and "invalid_token" in unknown.headers["www-authenticate"]
    reader = client.post(PATH, json={}, headers={"Authorization": "Bearer reader"})
    assert reader.status_code == 403
    assert 'scope="training:write"' in reader.headers["www-authenticate"]
    assert client.post(PATH, json={}, headers=ENGINEER).status_code == 202


def test_without_tokens_the_service_answers_on_loopback_only(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db")
    open_on_loopback = TestClient(build(settings).app)
    assert open_on_loopback.post(PATH, json={}).status_code == 202
    with pytest.raises(SystemExit, match="FETALMLOPS_TRAINER_TOKENS"):
        build(settings.model_copy(update={"http_host": "0.0.0.0"}))


def test_without_the_bus_a_request_is_a_503_to_send_again() -> None:
    down = EmbeddedBus()
    down.close()
    response = api(down, TrainerSettings(tokens=TOKENS)).post(PATH, json={}, headers=ENGINEER)
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0


def test_the_trainer_runs_a_request_made_over_http(tmp_path: Path) -> None:
    platform = site(tmp_path)
    # The phantom's pictures in the anonymised bucket, where the catalog's canonical ones live.
    generate(tmp_path / "phantom", plan(12, seed=3), seed=3, fmt=OutputFormat.PNG)
    bucket, entries = platform.settings.buckets.anonymized, []
    for entry in local.dataset_entries(tmp_path / "phantom"):
        key = f"canonical/{entry.image_id}.png"
        platform.store.put(bucket, key, Path(entry.source).read_bytes())
        entries.append(replace(entry, source=f"{bucket}/{key}"))
    frozen = catalog.freeze(
        platform.engine, platform.store, platform.settings,
        snapshot("planes", entries, Filters(), SplitSpec(seed=0)),
    )  # fmt: skip
    own = TrainerSettings(tokens=TOKENS, model_name="planes", workdir=tmp_path / "work")
    body = {
        "backbone": "tiny",
        "snapshot_id": frozen.id,
        "hyperparameters": {"epochs": 1, "batch_size": 16, "input_size": 32, "seed": 5},
    }
    response = api(platform.bus, own, platform.settings).post(PATH, json=body, headers=ENGINEER)
    assert response.status_code == 202, response.text

    (record,) = requested(platform.bus, platform.settings.topics.training_requested)
    Trainer(platform, own).handle(record)

    with session_scope(platform.engine) as session:
        (version,) = session.scalars(select(ModelVersion)).all()
        assert (version.model_name, version.version, version.snapshot_id) == (
            "planes",
            1,
            frozen.id,
        )
        assert version.recipe is not None
        asked = {"backbone": "tiny", "epochs": 1, "batch_size": 16, "input_size": 32, "seed": 5}
        assert {name: version.recipe[name] for name in asked} == asked
    subscription = platform.bus.subscribe([platform.settings.topics.models_trained], "t")
    (trained,) = [read_event(r) for r in subscription.poll(0.2)]
    assert isinstance(trained, models_pb2.ModelTrained) and trained.model_name == "planes"
