"""Shadow, canary and rollback on the real stack: rollout states on Kafka steer a running server.

`fetalmlops run inference` serves version 1 of a model from MinIO and follows
`fetal.models.rollout` on Kafka. Clients predict back to back over HTTP while the test publishes
version 2 in the shadow of version 1, then a canary of half the requests, then the rollback to
version 1 alone, then a stale replay of the canary, which must change nothing. No request may
fail; every answer names the arm and version that made it and is exactly that version's
answer; a canary request goes to the challenger exactly when its request id draws below the
fraction (the documented SHA-256 rule, computed here independently); and the prediction events
read back from Kafka name the same arms and versions, with a shadow event, paired by
`shadow_of`, for every request answered in shadow mode and none after it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import open_store
from fetalmlops.v1 import models_pb2, predictions_pb2

from .ingest_service import from_beginning
from .model_versions import Version, build_version, phantom_pngs, same
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]
CLIENTS = 3
FRACTION = 0.5


def canary_draw(request_id: str) -> float:
    """The contract's draw: the first 8 bytes of the id's SHA-256, big-endian, over 2**64."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class Answer:
    image: int
    prediction_id: str
    model_version: str
    arm: str
    probabilities: dict[str, float]
    sent: float  # time.monotonic() when the request left, and when its answer came back
    answered: float

    @property
    def request_id(self) -> str:
        return self.prediction_id.rsplit("-", 1)[0]


@dataclass
class Stream:
    """Clients predicting until told to stop, recording every answer or failure."""

    url: str
    images: list[bytes]
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def client(self, index: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = index
            while not self.stop.is_set():
                image = n % len(self.images)
                body = {"instances": [{"b64": base64.b64encode(self.images[image]).decode()}]}
                sent = time.monotonic()
                try:
                    response = http.post(self.url, json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"client {index}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"client {index}: {response.status_code} {response.text}")
                    continue
                (p,) = response.json()["predictions"]
                self.answers.append(
                    Answer(image, p["prediction_id"], p["model_version"], p["arm"],
                           p["probabilities"], sent, time.monotonic())
                )  # fmt: skip
                n += 1

    def between(self, start: float, end: float = float("inf")) -> list[Answer]:
        """Answers to requests sent after ``start`` and answered before ``end``: wholly
        served by the arms applied in between."""
        return [a for a in list(self.answers) if a.sent > start and a.answered < end]


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    service: ServiceProcess
    first: Version  # the champion, served from the start
    second: Version  # the challenger
    uris: dict[int, str]

    @property
    def name(self) -> str:
        return self.first.name

    def metric(self, name: str, labels: str) -> float:
        text = httpx.get(f"{self.service.url}/metrics", timeout=10).text
        found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def rollouts(self, outcome: str) -> float:
        return self.metric("fetalmlops_inference_rollouts_total", f'outcome="{outcome}"')

    def publish(self, sequence: int, mode: int, challenger: int = 2) -> None:
        event = models_pb2.RolloutChanged(
            model_name=self.name,
            champion_version=1,
            champion_storage_uri=self.uris[1],
            challenger_version=challenger,
            challenger_storage_uri=self.uris.get(challenger, ""),
            mode=mode,  # type: ignore[arg-type]
            canary_fraction=FRACTION if mode == models_pb2.ROLLOUT_MODE_CANARY else 0.0,
            sequence=sequence,
            reason="integration test",
        )
        bus = KafkaBus(self.settings.kafka_bootstrap_servers)
        try:
            publish_event(bus, self.settings.topics.models_rollout, self.name, event, "test")
        finally:
            bus.close()


@pytest.fixture
def deployment(
    stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> Iterator[Deployment]:
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    owner = stack_settings("trainer").model_copy(update={"topics": topics})
    bus = KafkaBus(owner.kafka_bootstrap_servers)
    bus.ensure_topics(
        [topics.models_promoted, topics.models_rollout, topics.predictions, topics.deadletter], 3
    )
    bus.close()
    name = f"planes-{tag}"
    store, bucket = open_store(owner), owner.buckets.models
    first, second = build_version(tmp_path, name, 1, seed=1), build_version(tmp_path, name, 2, 2)
    uris = {v.number: v.upload(store, bucket, f"{name}/v{v.number}/") for v in (first, second)}
    env = settings_env(stack_settings("inference").model_copy(update={"topics": topics}))
    env |= {"FETALMLOPS_INFERENCE_MODEL_URI": uris[1], "FETALMLOPS_INFERENCE_FOLLOW_ROLLOUTS": "1"}
    service = ServiceProcess("inference", env, tmp_path / "inference.log")
    service.start(timeout_s=90)
    try:
        yield Deployment(owner, service, first, second, uris)
    finally:
        service.stop()
        for info in list(store.list(bucket, f"{name}/")):
            store.delete(bucket, info.key)


def v2_answers(d: Deployment, images: list[bytes], count: int) -> list[Answer]:
    """``count`` V2 requests: the arm is the response's ``arm`` parameter."""
    answers = []
    with httpx.Client(timeout=30) as http:
        for n in range(count):
            image = n % len(images)
            data = [base64.b64encode(images[image]).decode()]
            body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": data}]}
            sent = time.monotonic()
            response = http.post(f"{d.service.url}/v2/models/{d.name}/infer", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            (prediction_id,) = json.loads(answer["parameters"]["prediction_ids"])
            classes = json.loads(answer["outputs"][0]["parameters"]["classes"])
            probabilities = dict(zip(classes, answer["outputs"][0]["data"], strict=True))
            answers.append(
                Answer(image, prediction_id, answer["model_version"], answer["parameters"]["arm"],
                       probabilities, sent, time.monotonic())
            )  # fmt: skip
    return answers


def predictions(settings: Settings) -> list[predictions_pb2.PredictionMade]:
    records = from_beginning(settings, [settings.topics.predictions])
    return [predictions_pb2.PredictionMade.FromString(r.value) for r in records]


def test_shadow_then_canary_then_rollback_fail_no_request(deployment: Deployment) -> None:
    d = deployment
    images = phantom_pngs(6, seed=5)
    stream = Stream(f"{d.service.url}/v1/models/{d.name}:predict", images)
    threads = [threading.Thread(target=stream.client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()

    def applied(count: int) -> float:
        wait_for(lambda: d.rollouts("applied") >= count, 120, f"rollout state {count} applied")
        return time.monotonic()

    def answered_after(start: float, count: int, what: str) -> float:
        wait_for(lambda: len(stream.between(start)) >= count or bool(stream.failures), 60, what)
        return time.monotonic()

    try:
        answered_after(0, 10, "version 1 answering")
        d.publish(1, models_pb2.ROLLOUT_MODE_SHADOW)
        shadowing = applied(1)
        shadow_end = answered_after(shadowing, 30, "answers in shadow")
        d.publish(2, models_pb2.ROLLOUT_MODE_CANARY)
        canary = applied(2)
        wait_for(
            lambda: (
                {a.arm for a in stream.between(canary)} == {"champion", "challenger"}
                and len(stream.between(canary)) >= 40
            ),
            60,
            "both arms answering the canary",
        )
        over_v2 = v2_answers(d, images, 24)
        stream.answers.extend(over_v2)
        canary_end = time.monotonic()
        d.publish(3, models_pb2.ROLLOUT_MODE_UNSPECIFIED, challenger=0)
        rolled_back = applied(3)
        answered_after(rolled_back, 20, "answers after the rollback")
        skipped = d.rollouts("skipped")
        d.publish(2, models_pb2.ROLLOUT_MODE_CANARY)  # a stale replay of the canary
        wait_for(lambda: d.rollouts("skipped") > skipped, 60, "the stale state skipped")
        replayed = time.monotonic()
        answered_after(replayed, 20, "answers after the replay")
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(60)

    assert stream.failures == [], stream.failures[:5]
    by_version = {"1": d.first, "2": d.second}
    for answer in stream.answers:
        assert same(
            answer.probabilities, by_version[answer.model_version].expected(images[answer.image])
        )
        assert (answer.arm, answer.model_version) in {("champion", "1"), ("challenger", "2")}
    shadowed = stream.between(shadowing, shadow_end)
    in_canary = stream.between(canary, canary_end)
    assert len(shadowed) >= 30 and len(in_canary) >= 40 + len(over_v2)
    assert {(a.arm, a.model_version) for a in shadowed} == {("champion", "1")}
    for answer in in_canary:
        chosen = canary_draw(answer.request_id) < FRACTION
        assert answer.arm == ("challenger" if chosen else "champion"), answer
    assert {a.arm for a in over_v2} == {"champion", "challenger"}  # p = 1 - 2**-23
    after = stream.between(rolled_back)
    assert {(a.arm, a.model_version) for a in after} == {("champion", "1")}
    assert d.metric("fetalmlops_inference_challenger_version", f'model="{d.name}"') == 0

    # The events, read back from Kafka: one per answer, naming its arm and version, and a
    # shadow of every request answered in shadow mode.
    ids = {a.prediction_id for a in stream.answers}
    wait_for(lambda: ids <= {e.prediction_id for e in predictions(d.settings)}, 60, "events")
    events = predictions(d.settings)
    answers = {a.prediction_id: a for a in stream.answers}
    arms = {predictions_pb2.ARM_CHAMPION: "champion", predictions_pb2.ARM_CHALLENGER: "challenger"}
    shadows = {e.shadow_of: e for e in events if e.arm == predictions_pb2.ARM_SHADOW}
    for event in events:
        assert not event.challenger_failed
        if event.arm == predictions_pb2.ARM_SHADOW:
            assert event.prediction_id == f"{event.shadow_of}-shadow"
            assert event.shadow_of in answers and event.model_version == 2
            image = images[answers[event.shadow_of].image]
            assert same(dict(event.probabilities), d.second.expected(image))
            continue
        answer = answers[event.prediction_id]
        assert (arms[event.arm], str(event.model_version)) == (answer.arm, answer.model_version)
        assert not event.shadow_of
    assert {a.prediction_id for a in shadowed} <= set(shadows)
    assert not {a.prediction_id for a in (*in_canary, *after)} & set(shadows)
