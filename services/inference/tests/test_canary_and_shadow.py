"""A champion and a challenger served side by side, through KServe's own ``Model.__call__``:
who answers, what each arm publishes, and that no client ever sees the challenger fail.

Every expected probability is the archived handler's own answer for the version the answer
names, so "answered by the challenger" is checked on the numbers, not only on the label.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from kserve.protocol.infer_type import InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from prometheus_client import REGISTRY

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.arms import Arms, Loaded, Mode, canary_draw
from fetalmlops.inference.batching import MicroBatcher
from fetalmlops.inference.predictor import Options, PlanePredictor
from fetalmlops.v1 import predictions_pb2

from .conftest import NAME, VERSION

Events = list[predictions_pb2.PredictionMade]
CHAMPION, CHALLENGER, SHADOW = (
    predictions_pb2.ARM_CHAMPION,
    predictions_pb2.ARM_CHALLENGER,
    predictions_pb2.ARM_SHADOW,
)
PLANTED = "DOE^JANE 0012345"  # stands for what a failing library might quote


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1(*images: bytes) -> dict[str, Any]:
    return {"instances": [{"b64": b64(image)} for image in images]}


def v2(*images: bytes) -> InferRequest:
    data = [b64(image) for image in images]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}]}
    return InferRequest.from_inference_request(InferenceRequest.model_validate(body), NAME)


def expected(loaded: Loaded, image: bytes) -> list[float]:
    """The archived handler's probabilities for ``image`` (its own decoding), in class order."""
    answer = loaded.classifier.answer([image])[0]["probabilities"]
    return [answer[name] for name in loaded.classifier.classes]


def probabilities(prediction: dict[str, Any]) -> list[float]:
    return list(prediction["probabilities"].values())


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": NAME, **labels}) or 0.0


class Replica:
    """A predictor serving version 4, publishing into ``events``, and its challenger."""

    def __init__(self, champion: ModelLayout, cache: Path, **options: Any) -> None:
        self.events: Events = []
        self.cache = cache
        self.predictor = PlanePredictor(
            open_version(champion.root, cache / "champion"),
            options=Options(publish=self.events.extend, **options),
        )
        self.predictor.load()
        self.champion = self.predictor.serving().champion

    def loaded(self, layout: ModelLayout) -> Loaded:
        return self.predictor.loaded_version(
            open_version(layout.root, self.cache / layout.root.name)
        )

    def serve(self, challenger: Loaded | None, mode: Mode, fraction: float = 0.0) -> None:
        arms = Arms(self.champion, challenger, mode, fraction)
        self.predictor.change(lambda _: arms)

    def answer(self, *bodies: object) -> list[Any]:
        """Every body answered concurrently, then the shadows they started settled."""

        async def run() -> list[Any]:
            answers = await asyncio.gather(*(self.predictor(body) for body in bodies))
            await self.predictor.shadows.settled()
            return [answer for answer, _headers in answers]

        return asyncio.run(run())

    def by_arm(self, arm: int) -> Events:
        return [event for event in self.events if event.arm == arm]


def failing(loaded: Loaded) -> Loaded:
    """``loaded`` whose every model run fails, as a run out of GPU memory does."""

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise RuntimeError(f"CUDA out of memory while reading {PLANTED}")

    return replace(loaded, batcher=MicroBatcher(run, max_delay_ms=0))


@pytest.fixture
def replica(layout: ModelLayout, tmp_path: Path) -> Replica:
    return Replica(layout, tmp_path)


def test_in_shadow_the_champion_answers_and_both_arms_publish(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    challenger = replica.loaded(second)
    replica.serve(challenger, Mode.SHADOW)
    shadowed = sample("fetalmlops_inference_predictions_total", model_version="5",
                      plane="fetal_brain", arm="shadow")  # fmt: skip
    (answer,) = replica.answer(v1(*pngs[:2]))

    predictions = answer["predictions"]
    ids = [p["prediction_id"] for p in predictions]
    for prediction, png in zip(predictions, pngs[:2], strict=True):
        assert (prediction["model_version"], prediction["arm"]) == (str(VERSION), "champion")
        assert probabilities(prediction) == pytest.approx(expected(replica.champion, png), abs=1e-6)
    champion, shadow = replica.by_arm(CHAMPION), replica.by_arm(SHADOW)
    assert [e.prediction_id for e in champion] == ids
    assert [e.prediction_id for e in shadow] == [f"{i}-shadow" for i in ids]
    assert [e.shadow_of for e in shadow] == ids and not any(e.shadow_of for e in champion)
    assert {e.request_id for e in shadow} == {e.request_id for e in champion}
    assert {(e.model_version, e.compute_device) for e in shadow} == {(5, "cpu")}
    for event, png in zip(shadow, pngs[:2], strict=True):
        scores = [event.probabilities[c] for c in challenger.classifier.classes]
        assert scores == pytest.approx(expected(challenger, png), abs=1e-6)
        assert scores != pytest.approx(expected(replica.champion, png), abs=1e-3)
        assert event.latency_ms > 0 and event.embedding_summary
    assert len(replica.events) == 4
    planes = [e.predicted_plane for e in shadow].count("fetal_brain")
    assert sample("fetalmlops_inference_predictions_total", model_version="5",
                  plane="fetal_brain", arm="shadow") == shadowed + planes  # fmt: skip


def test_the_answer_never_waits_for_its_shadow(
    layout: ModelLayout, second: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    replica = Replica(layout, tmp_path, max_shadows_in_flight=1)
    challenger = replica.loaded(second)
    release = threading.Event()

    def held(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        release.wait(30)  # a slow challenger: the shadow is still running
        probabilities, embeddings = challenger.classifier.scores(images)
        return (probabilities,) if embeddings is None else (probabilities, embeddings)

    replica.serve(replace(challenger, batcher=MicroBatcher(held, max_delay_ms=0)), Mode.SHADOW)
    skipped = sample("fetalmlops_inference_shadow_runs_total", model_version="5", outcome="skipped")

    async def run() -> tuple[int, int, int]:
        predictor = replica.predictor
        await predictor(v1(pngs[0]))
        in_flight, published = predictor.shadows.in_flight, len(replica.events)
        await predictor(v1(pngs[1]))  # its shadow is one too many: skipped, not queued
        release.set()
        await predictor.shadows.settled()
        return in_flight, published, predictor.shadows.in_flight

    in_flight, published, after = asyncio.run(run())
    assert (in_flight, published, after) == (1, 1, 0)  # answered, its shadow still scoring
    assert len(replica.by_arm(CHAMPION)) == 2 and len(replica.by_arm(SHADOW)) == 1
    assert (
        sample("fetalmlops_inference_shadow_runs_total", model_version="5", outcome="skipped")
        == skipped + 1
    )


def test_a_failing_shadow_never_fails_the_request_nor_logs_its_message(
    replica: Replica, second: ModelLayout, pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    replica.serve(failing(replica.loaded(second)), Mode.SHADOW)
    failed = sample("fetalmlops_inference_shadow_runs_total", model_version="5", outcome="failed")
    with caplog.at_level(logging.DEBUG):
        answers = replica.answer(v1(pngs[0]), v2(pngs[1]))

    assert answers[0]["predictions"][0]["arm"] == "champion"
    assert isinstance(answers[1], InferResponse) and answers[1].parameters["arm"] == "champion"
    assert len(replica.by_arm(CHAMPION)) == 2 and replica.by_arm(SHADOW) == []
    assert (
        sample("fetalmlops_inference_shadow_runs_total", model_version="5", outcome="failed")
        == failed + 2
    )
    warnings = [r for r in caplog.records if r.getMessage() == "a shadow scoring failed"]
    assert [w.error for w in warnings] == ["RuntimeError"] * 2  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "DOE" in f"{r.getMessage()} {r.__dict__}"]


def test_canary_requests_are_answered_by_the_arm_their_id_draws(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    challenger = replica.loaded(second)
    replica.serve(challenger, Mode.CANARY, fraction=0.5)
    images = list(itertools.islice(itertools.cycle(pngs), 32))
    answers = replica.answer(*(v1(image) for image in images))

    arms = []
    for answer, image in zip(answers, images, strict=True):
        (prediction,) = answer["predictions"]
        request_id = prediction["prediction_id"].rsplit("-", 1)[0]
        arm = "challenger" if canary_draw(request_id) < 0.5 else "champion"
        loaded = challenger if arm == "challenger" else replica.champion
        assert (prediction["arm"], prediction["model_version"]) == (arm, loaded.version)
        assert probabilities(prediction) == pytest.approx(expected(loaded, image), abs=1e-6)
        arms.append(arm)
    assert set(arms) == {"champion", "challenger"}  # 32 fair draws: both arms (p = 1 - 2**-31)
    events = {e.prediction_id: e for e in replica.events}
    assert len(events) == len(answers) and replica.by_arm(SHADOW) == []
    for answer in answers:
        (prediction,) = answer["predictions"]
        event = events[prediction["prediction_id"]]
        assert event.arm == (CHALLENGER if prediction["arm"] == "challenger" else CHAMPION)
        assert str(event.model_version) == prediction["model_version"]


def test_a_failing_canary_challenger_hands_the_request_to_the_champion(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    replica.serve(failing(replica.loaded(second)), Mode.CANARY, fraction=1.0)
    fallbacks = sample("fetalmlops_inference_canary_fallbacks_total", model_version="5")
    answers = replica.answer(v1(pngs[0]), v2(pngs[1]))

    (prediction,) = answers[0]["predictions"]
    assert (prediction["arm"], prediction["model_version"]) == ("champion", str(VERSION))
    assert probabilities(prediction) == pytest.approx(expected(replica.champion, pngs[0]), abs=1e-6)
    response = answers[1]
    assert (response.model_version, response.parameters["arm"]) == (str(VERSION), "champion")
    assert [(e.arm, e.model_version, e.challenger_failed) for e in replica.events] == [
        (CHAMPION, VERSION, True)
    ] * 2
    assert sample("fetalmlops_inference_canary_fallbacks_total", model_version="5") == (
        fallbacks + 2
    )


def test_a_challenger_that_decodes_otherwise_decodes_for_itself(
    replica: Replica, resized: ModelLayout, pngs: list[bytes]
) -> None:
    challenger = replica.loaded(resized)  # 48 pixels where the champion takes 64
    assert challenger.decoding != replica.champion.decoding
    replica.serve(challenger, Mode.SHADOW)
    replica.answer(v1(pngs[0]))
    (shadow,) = replica.by_arm(SHADOW)
    scores = [shadow.probabilities[c] for c in challenger.classifier.classes]
    assert scores == pytest.approx(expected(challenger, pngs[0]), abs=1e-6)

    replica.serve(challenger, Mode.CANARY, fraction=1.0)
    tensor = replica.champion.archive.decode(pngs[1]).tensor[None]
    preprocessed = InferRequest.from_inference_request(
        InferenceRequest.model_validate({"inputs": [{
            "name": "preprocessed", "datatype": "FP32", "shape": list(tensor.shape),
            "data": tensor.flatten().tolist(),
        }]}),
        NAME,
    )  # fmt: skip
    image, champions_tensor = replica.answer(v1(pngs[1]), preprocessed)
    (prediction,) = image["predictions"]
    assert (prediction["arm"], prediction["model_version"]) == ("challenger", "6")
    assert probabilities(prediction) == pytest.approx(expected(challenger, pngs[1]), abs=1e-6)
    # A tensor preprocessed as the champion's metadata says is no input for the challenger.
    assert champions_tensor.parameters["arm"] == "champion"
    (fallback,) = [e for e in replica.events if e.challenger_failed]
    assert (fallback.arm, fallback.model_version) == (CHAMPION, VERSION)


def test_a_rollback_serves_the_champion_alone(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    replica.serve(replica.loaded(second), Mode.CANARY, fraction=1.0)
    (before,) = replica.answer(v1(pngs[0]))
    replica.serve(None, Mode.CHAMPION_ALONE)
    answers = replica.answer(*(v1(png) for png in pngs))

    assert before["predictions"][0]["arm"] == "challenger"
    assert {a["predictions"][0]["arm"] for a in answers} == {"champion"}
    assert [e.arm for e in replica.events] == [CHALLENGER] + [CHAMPION] * len(pngs)


def test_a_request_keeps_the_arms_it_was_decoded_with(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    replica.serve(replica.loaded(second), Mode.CANARY, fraction=1.0)
    predictor = replica.predictor

    async def rollback_between_decoding_and_answering() -> Any:
        received = await predictor.preprocess(v1(pngs[0]))
        replica.serve(None, Mode.CHAMPION_ALONE)
        return await predictor.postprocess(await predictor.predict(received))

    answer = asyncio.run(rollback_between_decoding_and_answering())
    assert answer["predictions"][0]["arm"] == "challenger"
    assert predictor.serving().challenger is None


def test_requests_running_while_the_arms_change_all_succeed(
    replica: Replica, second: ModelLayout, pngs: list[bytes]
) -> None:
    challenger = replica.loaded(second)
    by_version = {replica.champion.version: replica.champion, challenger.version: challenger}
    states = itertools.cycle([
        Arms(replica.champion, challenger, Mode.SHADOW),
        Arms(replica.champion, challenger, Mode.CANARY, 0.5),
        Arms(replica.champion),
        Arms(challenger, replica.champion, Mode.CANARY, 0.5),  # the challenger promoted
    ])  # fmt: skip
    stop = threading.Event()

    def serve(arms: Arms) -> None:
        replica.predictor.change(lambda _: arms)

    def follower() -> int:
        """What the follower threads do: change the arms while requests run."""
        changes = 0
        while not stop.is_set():
            serve(next(states))
            changes += 1
            time.sleep(0.002)
        return changes

    images = list(itertools.islice(itertools.cycle(pngs), 96))

    async def run() -> tuple[list[Any], int]:
        changing = asyncio.get_running_loop().run_in_executor(None, follower)
        try:
            answers = []
            for start in range(0, len(images), 8):  # waves of 8 concurrent requests
                bodies = [v1(image) for image in images[start : start + 8]]
                answers += [a for a, _ in await asyncio.gather(*map(replica.predictor, bodies))]
        finally:
            stop.set()
        changes = await changing
        await replica.predictor.shadows.settled()
        return answers, changes

    answers, changes = asyncio.run(run())
    assert changes > 8 and len(answers) == len(images)  # gather raised on any failure
    seen = set()
    for answer, image in zip(answers, images, strict=True):
        (prediction,) = answer["predictions"]
        loaded = by_version[prediction["model_version"]]
        assert probabilities(prediction) == pytest.approx(expected(loaded, image), abs=1e-6)
        seen.add((prediction["model_version"], prediction["arm"]))
    assert {arm for _, arm in seen} == {"champion", "challenger"}
    assert {e.prediction_id for e in replica.events if e.arm != SHADOW} == {
        a["predictions"][0]["prediction_id"] for a in answers
    }
    for shadow in replica.by_arm(SHADOW):
        assert shadow.prediction_id == f"{shadow.shadow_of}-shadow"
