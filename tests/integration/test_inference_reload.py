"""Hot reload on the real stack: a promotion during a stream of requests drops none of them.

`fetalmlops run inference` serves version 1 of a model from MinIO and follows
`fetal.models.promoted` on Kafka. Four clients send predictions back to back; version 2 (other
weights) is uploaded and its promotion published. Every request must succeed, each client must
see version 1 and then version 2 and never go back, and every answer must be exactly what the
version it names computes. A promotion whose version cannot be loaded is dead-lettered and the
served version stays. A server started before its model had any version (no model URI, only
its name) answers 503 until the first promotion, then serves that version.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import open_store
from fetalmlops.v1 import models_pb2

from .ingest_service import from_beginning
from .model_versions import Version, build_version, phantom_pngs, same
from .processes import ServiceProcess, answers, get, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]
CLIENTS = 4


@dataclass
class Stream:
    """Clients predicting until told to stop, recording every answer or failure."""

    url: str
    images: list[bytes]
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[list[tuple[int, str, dict[str, float]]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def client(self, index: int) -> None:
        seen: list[tuple[int, str, dict[str, float]]] = []
        self.answers.append(seen)
        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                image = n % len(self.images)
                body = {"instances": [{"b64": base64.b64encode(self.images[image]).decode()}]}
                try:
                    response = http.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"client {index}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"client {index}: {response.status_code} {response.text}")
                    continue
                (prediction,) = response.json()["predictions"]
                seen.append((image, prediction["model_version"], prediction["probabilities"]))
                n += 1

    def versions(self) -> set[str]:
        return {version for seen in self.answers for _, version, _ in seen}


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    service: ServiceProcess
    first: Version  # served from the start


@dataclass(frozen=True)
class Platform:
    """Topics of a test's own on the stack, and a model name of its own."""

    settings: Settings  # the registry's, which promotes
    env: dict[str, str]  # the inference service's
    name: str


def platform(stack_settings: Callable[[str | None], Settings]) -> Platform:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    owner = stack_settings("trainer").model_copy(update={"topics": topics})
    bus = KafkaBus(owner.kafka_bootstrap_servers)
    bus.ensure_topics([topics.models_promoted, topics.predictions, topics.deadletter], 3)
    bus.close()
    env = settings_env(stack_settings("inference").model_copy(update={"topics": topics}))
    env |= {"FETALMLOPS_INFERENCE_RELOAD_ON_PROMOTION": "1"}
    return Platform(owner, env, f"planes-{tag}")


@pytest.fixture
def deployment(
    stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> Iterator[Deployment]:
    fresh = platform(stack_settings)
    owner, name = fresh.settings, fresh.name
    store, bucket = open_store(owner), owner.buckets.models
    first = build_version(tmp_path, name, 1, seed=1)
    uri = first.upload(store, bucket, f"{name}/v1/")
    env = fresh.env | {"FETALMLOPS_INFERENCE_MODEL_URI": uri}
    service = ServiceProcess("inference", env, tmp_path / "inference.log")
    service.start(timeout_s=90)
    try:
        yield Deployment(owner, service, first)
    finally:
        service.stop()
        for info in list(store.list(bucket, f"{name}/")):
            store.delete(bucket, info.key)


def promote(settings: Settings, name: str, version: int, uri: str, previous: int) -> None:
    event = models_pb2.ModelPromoted(
        model_name=name, version=version, storage_uri=uri, previous_version=previous
    )
    bus = KafkaBus(settings.kafka_bootstrap_servers)
    try:
        publish_event(bus, settings.topics.models_promoted, name, event, "registry-test")
    finally:
        bus.close()


def test_a_promotion_during_a_request_stream_drops_no_request(
    deployment: Deployment, tmp_path: Path
) -> None:
    name, settings = deployment.first.name, deployment.settings
    images = phantom_pngs(6, seed=5)
    stream = Stream(f"{deployment.service.url}/v1/models/{name}:predict", images)
    threads = [threading.Thread(target=stream.client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: sum(map(len, stream.answers)) >= 20, 60, "version 1 answering")
        second = build_version(tmp_path, name, 2, seed=2)
        uri = second.upload(open_store(settings), settings.buckets.models, f"{name}/v2/")
        promote(settings, name, 2, uri, previous=1)
        wait_for(lambda: "2" in stream.versions() or bool(stream.failures), 120, "version 2")
        answered = sum(map(len, stream.answers))
        wait_for(lambda: sum(map(len, stream.answers)) >= answered + 20, 60, "more answers")
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(60)

    assert stream.failures == [], stream.failures[:5]
    by_version: dict[str, Version] = {"1": deployment.first, "2": second}
    for seen in stream.answers:
        versions = [version for _, version, _ in seen]
        assert versions == sorted(versions), "a client went back to the old version"
        for image, version, probabilities in seen:
            assert same(probabilities, by_version[version].expected(images[image]))
    assert stream.versions() == {"1", "2"}


def test_a_version_that_does_not_load_is_deadlettered_and_the_old_one_serves_on(
    deployment: Deployment,
) -> None:
    name, settings = deployment.first.name, deployment.settings
    broken = f"s3://{settings.buckets.models}/{name}/v3/"  # nothing was uploaded there
    promote(settings, name, 3, broken, previous=1)

    def deadlettered() -> bool:
        return bool(from_beginning(settings, [settings.topics.deadletter]))

    wait_for(deadlettered, 60, "the broken promotion dead-lettered")
    (record,) = from_beginning(settings, [settings.topics.deadletter])
    headers = dict(record.headers)
    assert headers["dlq-original-topic"] == settings.topics.models_promoted.encode()
    assert b"no model version at" in headers["dlq-error"]
    body = {"instances": [{"b64": base64.b64encode(phantom_pngs(1, seed=3)[0]).decode()}]}
    response = httpx.post(
        f"{deployment.service.url}/v1/models/{name}:predict", json=body, timeout=30
    )
    assert response.status_code == 200 and response.json()["predictions"][0]["model_version"] == "1"


def test_a_server_started_before_any_version_serves_the_first_one_promoted(
    stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> None:
    fresh = platform(stack_settings)
    settings, name = fresh.settings, fresh.name
    env = fresh.env | {"FETALMLOPS_INFERENCE_MODEL_NAME": name}
    service = ServiceProcess("inference", env, tmp_path / "inference.log")
    service.start(timeout_s=90, probe="/healthz")  # live, and unready: nothing to serve yet
    store, bucket = open_store(settings), settings.buckets.models
    image = phantom_pngs(1, seed=3)[0]
    body = {"instances": [{"b64": base64.b64encode(image).decode()}]}
    predict = f"{service.url}/v1/models/{name}:predict"
    try:
        status, readiness = get(f"{service.url}/readyz")
        assert status == 503 and f"waiting for its first promoted version: {name}" in readiness
        refused = httpx.post(predict, json=body, timeout=30)
        assert (refused.status_code, refused.json()) == (
            503,
            {"error": "the model is not loaded yet"},
        )
        assert get(f"{service.url}/v2/models/{name}/ready")[0] == 503
        assert get(f"{service.url}/v2/models/{name}")[0] == 503  # no version, no metadata

        first = build_version(tmp_path, name, 1, seed=1)
        promote(settings, name, 1, first.upload(store, bucket, f"{name}/v1/"), previous=0)
        wait_for(lambda: answers(f"{service.url}/readyz"), 120, "ready with version 1")

        response = httpx.post(predict, json=body, timeout=30)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["model_version"] == "1"
        assert same(prediction["probabilities"], first.expected(image).tolist())
        assert get(f"{service.url}/v2/models/{name}/ready")[0] == 200
    finally:
        service.stop()
        for info in list(store.list(bucket, f"{name}/")):
            store.delete(bucket, info.key)
