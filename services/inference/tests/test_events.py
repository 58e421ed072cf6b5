"""Prediction events: one per image, what the monitor needs, the drift reference's arithmetic,
and nothing identifying; and a switch of version that leaves requests in flight alone."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from PIL import Image

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.imaging.statistics import MAX_SAMPLED_DIM, projected
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.events import (
    Observation,
    Served,
    embedding_summary,
    prediction_event,
)
from fetalmlops.inference.predictor import Options, PlanePredictor
from fetalmlops.v1 import predictions_pb2

from .conftest import CLASSES, NAME, VERSION
from .test_dicom import phantom

Events = list[predictions_pb2.PredictionMade]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def publishing(layout: ModelLayout, cache: Path) -> tuple[PlanePredictor, Events]:
    published: Events = []
    predictor = PlanePredictor(
        open_version(layout.root, cache), options=Options(publish=published.extend)
    )
    predictor.load()
    return predictor, published


def call(predictor: PlanePredictor, body: object) -> Any:
    response, _headers = asyncio.run(predictor(body))
    return response


def test_each_image_gets_an_event_named_as_its_answer(
    layout: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    predictor, events = publishing(layout, tmp_path)
    answer = call(predictor, {"instances": [{"b64": b64(png)} for png in pngs]})

    predictions = answer["predictions"]
    assert [e.prediction_id for e in events] == [p["prediction_id"] for p in predictions]
    assert len({e.request_id for e in events}) == 1 and events[0].request_id
    for event, prediction, png in zip(events, predictions, pngs, strict=True):
        assert (event.model_name, event.model_version) == (NAME, VERSION)
        # No rollout: the champion answers, and says so.
        assert (event.arm, prediction["arm"]) == (predictions_pb2.ARM_CHAMPION, "champion")
        assert not event.shadow_of and not event.challenger_failed
        assert event.predicted_plane == prediction["label"]
        assert dict(event.probabilities) == pytest.approx(prediction["probabilities"], abs=1e-6)
        assert event.compute_device == "cpu" and event.latency_ms > 0
        assert len(event.embedding_summary) == 16  # the tiny CNN's head takes 16 features
        with Image.open(io.BytesIO(png)) as picture:
            assert (event.image_statistics.columns, event.image_statistics.rows) == picture.size
        assert not event.HasField("device")  # a PNG names no scanner


def served() -> Served:
    return Served("r", NAME, VERSION, CLASSES, "cpu", 1.0)


def observation(thumbnail: np.ndarray, embedding: np.ndarray | None = None) -> Observation:  # type: ignore[type-arg]
    probabilities = [0.1, 0.5, 0.1, 0.1, 0.1, 0.1]
    return Observation(probabilities, embedding, thumbnail, 64, 64)


def test_wide_embeddings_are_projected_as_the_reference_projects_its_sample() -> None:
    rng = np.random.default_rng(0)
    narrow, wide = rng.normal(size=MAX_SAMPLED_DIM), rng.normal(size=512)
    assert embedding_summary(narrow).tolist() == pytest.approx(narrow.tolist())
    np.testing.assert_allclose(embedding_summary(wide), projected(wide[None])[0])
    assert len(embedding_summary(wide)) == 32
    thumbnail = np.zeros((64, 64), dtype=np.uint8)
    event = prediction_event(served(), 3, observation(thumbnail, wide.astype(np.float32)))
    assert event.prediction_id == "r-3" and event.predicted_plane == CLASSES[1]
    np.testing.assert_allclose(event.embedding_summary, embedding_summary(wide), atol=1e-5)


def test_a_dicom_request_names_its_scanner_and_nothing_of_its_patient(
    layout: ModelLayout, tmp_path: Path
) -> None:
    predictor, events = publishing(layout, tmp_path)
    study = phantom(7)
    call(predictor, {"instances": [{"b64": b64(study.data)}]})

    (event,) = events
    ds = study.dataset
    assert event.device.manufacturer == ds.Manufacturer
    assert event.device.model == ds.ManufacturerModelName
    serialized = event.SerializeToString() + str(event).encode()
    assert [value for value in study.phi if value.encode() in serialized] == []


def test_v2_requests_publish_too(layout: ModelLayout, pngs: list[bytes], tmp_path: Path) -> None:
    predictor, events = publishing(layout, tmp_path)
    body = {"id": "client-id", "inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(p) for p in pngs[:2]]}
    ]}  # fmt: skip
    request = InferRequest.from_inference_request(InferenceRequest.model_validate(body), NAME)
    response = call(predictor, request)

    ids = response.parameters["prediction_ids"]
    assert [e.prediction_id for e in events] == json.loads(ids)
    assert "client-id" not in {e.request_id for e in events}  # a client's id may be PHI


def test_a_switch_answers_requests_in_flight_with_their_own_version(
    layout: ModelLayout, second: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    predictor, events = publishing(layout, tmp_path / "a")
    body = {"instances": [{"b64": b64(pngs[0])}]}

    async def switch_between_decoding_and_answering() -> tuple[Any, Any]:
        received = await predictor.preprocess(body)
        predictor.switch(open_version(second.root, tmp_path / "b"))
        in_flight = await predictor.postprocess(await predictor.predict(received))
        after, _ = await predictor(body)
        return in_flight, after

    in_flight, after = asyncio.run(switch_between_decoding_and_answering())

    assert in_flight["predictions"][0]["model_version"] == str(VERSION)
    assert after["predictions"][0]["model_version"] == "5"
    assert in_flight["predictions"][0]["probabilities"] != after["predictions"][0]["probabilities"]
    assert [e.model_version for e in events] == [VERSION, 5]
    assert predictor.model_version == "5"


def test_concurrent_requests_share_model_runs(
    layout: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    predictor = PlanePredictor(
        open_version(layout.root, tmp_path), options=Options(max_batch_delay_ms=50)
    )
    predictor.load()
    bodies = [{"instances": [{"b64": b64(png)}]} for png in pngs * 4]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(predictor(body) for body in bodies))

    answers = [answer for answer, _ in asyncio.run(all_at_once())]
    alone = [call(predictor, body) for body in bodies]

    assert predictor.serving().champion.batcher.stats.batches < len(bodies) + len(alone)
    for together, single in zip(answers, alone, strict=True):
        a, b = together["predictions"][0], single["predictions"][0]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
