"""The predictor in-process, through KServe's own ``Model.__call__`` pipeline and data plane.

Its answers are compared with the archive's handler loaded as a TorchServe worker loads it, so
"serving runs exactly the packaged inference" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from kserve.protocol.rest.v2_datamodels import InferenceRequest, ModelMetadataResponse

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.predictor import PlanePredictor

from .conftest import CLASSES, NAME, SIZE, VERSION, TorchServeWorker

B64_TEXT = base64.b64encode(b"plain text, not a picture").decode()


@pytest.fixture(scope="module")
def predictor(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> PlanePredictor:
    loaded = PlanePredictor(open_version(layout.root, tmp_path_factory.mktemp("cache")))
    loaded.load()
    return loaded


def call(predictor: PlanePredictor, body: object) -> Any:
    response, _headers = asyncio.run(predictor(body))
    return response.to_rest()[0] if isinstance(response, InferResponse) else response


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2(inputs: list[dict[str, Any]], **extra: Any) -> InferRequest:
    """The InferRequest KServe's V2 endpoint builds from a JSON body."""
    body = InferenceRequest.model_validate({"id": "r-1", "inputs": inputs, **extra})
    return InferRequest.from_inference_request(body, NAME)


def images_input(encoded: list[Any]) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [len(encoded)], "data": encoded}


def test_v1_predictions_are_the_archived_handlers_answers(
    predictor: PlanePredictor, pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    expected = torchserve.classifier.answer(pngs)
    answer = call(predictor, {"instances": [{"b64": b64(png)} for png in pngs]})

    assert len(answer["predictions"]) == len(pngs)
    for prediction, reference in zip(answer["predictions"], expected, strict=True):
        assert prediction["label"] == reference["label"]
        assert list(prediction["probabilities"]) == CLASSES
        assert prediction["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-6)
        assert (prediction["model_name"], prediction["model_version"]) == (NAME, str(VERSION))
    # Different frames reach the model as different inputs (an untrained CNN may still agree
    # on the label).
    first, *others = [list(p["probabilities"].values()) for p in answer["predictions"]]
    assert any(other != pytest.approx(first, abs=1e-4) for other in others)


def test_v1_accepts_a_json_body_kserve_passes_through_as_bytes(
    predictor: PlanePredictor, pngs: list[bytes]
) -> None:
    # `curl -d` sends application/x-www-form-urlencoded; KServe then hands over the raw body.
    body = json.dumps({"instances": [{"b64": b64(pngs[0])}]}).encode()
    (from_bytes,) = call(predictor, body)["predictions"]
    (from_json,) = call(predictor, {"instances": [{"b64": b64(pngs[0])}]})["predictions"]
    assert from_bytes.pop("prediction_id") != from_json.pop("prediction_id")
    assert from_bytes == from_json


def test_v1_accepts_tensorflow_servings_request_formats(
    predictor: PlanePredictor, pngs: list[bytes]
) -> None:
    encoded = {"b64": b64(pngs[0])}
    bodies = [
        {"instances": [encoded]},
        {"instances": [{"image_bytes": encoded}]},  # Vertex AI's image input
        {"inputs": [encoded]},  # the columnar format
        {"inputs": {"image_bytes": [encoded]}},
        {"inputs": [b64(pngs[0])]},
    ]
    answers = [call(predictor, body)["predictions"] for body in bodies]
    for (prediction,) in answers:
        assert prediction["probabilities"] == answers[0][0]["probabilities"]


def test_v2_images_give_the_same_answers_with_both_outputs(
    predictor: PlanePredictor, pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    expected = torchserve.classifier.answer(pngs)
    answer = call(predictor, v2([images_input([b64(png) for png in pngs])]))

    assert (answer["id"], answer["model_name"], answer["model_version"]) == ("r-1", NAME, "4")
    probabilities, labels = answer["outputs"]
    assert probabilities["name"] == "probabilities" and probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [len(pngs), len(CLASSES)]
    assert json.loads(probabilities["parameters"]["classes"]) == CLASSES
    rows = np.array(probabilities["data"]).reshape(len(pngs), len(CLASSES))
    reference = np.array([[a["probabilities"][c] for c in CLASSES] for a in expected])
    np.testing.assert_allclose(rows, reference, atol=1e-6)
    assert labels == {
        "name": "label",
        "shape": [len(pngs)],
        "datatype": "BYTES",
        "data": [a["label"] for a in expected],
    }


def test_v2_raw_image_bytes_from_an_in_process_caller(
    predictor: PlanePredictor, pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    request = InferRequest(NAME, [InferInput("image", [1], "BYTES", [pngs[1]])], "r-2")
    rows = call(predictor, request)["outputs"][0]["data"]
    reference = torchserve.classifier.answer([pngs[1]])[0]["probabilities"]
    assert rows == pytest.approx([reference[c] for c in CLASSES], abs=1e-6)


def test_v2_preprocessed_tensors_skip_decoding_and_agree(
    predictor: PlanePredictor, pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    tensors = torch.stack(
        [torchserve.handler.decode(p, torchserve.classifier.preprocessing) for p in pngs[:2]]
    )
    tensor_input = {
        "name": "preprocessed",
        "datatype": "FP32",
        "shape": list(tensors.shape),
        "data": tensors.flatten().tolist(),
    }
    from_tensors = call(predictor, v2([tensor_input]))["outputs"][0]["data"]
    from_images = call(predictor, v2([images_input([b64(p) for p in pngs[:2]])]))["outputs"][0]
    assert from_tensors == pytest.approx(from_images["data"], abs=1e-6)


def test_v2_requested_outputs_are_honoured(predictor: PlanePredictor, pngs: list[bytes]) -> None:
    request = v2([images_input([b64(pngs[0])])], outputs=[{"name": "label"}])
    assert [o["name"] for o in call(predictor, request)["outputs"]] == ["label"]
    unknown = v2([images_input([b64(pngs[0])])], outputs=[{"name": "embedding"}])
    with pytest.raises(
        InvalidInput, match=r"^output 0 is not one this model gives: 'probabilities' or 'label'$"
    ):
        call(predictor, unknown)


def test_v2_metadata_lists_the_real_inputs_and_outputs(predictor: PlanePredictor) -> None:
    repository = ModelRepository()
    repository.update(predictor)
    plane = DataPlane(repository)
    metadata = asyncio.run(plane.model_metadata(NAME))
    ModelMetadataResponse.model_validate(metadata)
    assert metadata["inputs"] == [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "preprocessed", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]},
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    with pytest.raises(ModelNotFound):
        asyncio.run(plane.model_metadata("nosuch"))


def test_not_ready_until_loaded(layout: ModelLayout, pngs: list[bytes], tmp_path: Path) -> None:
    fresh = PlanePredictor(open_version(layout.root, tmp_path), name="planes")
    repository = ModelRepository()
    repository.update(fresh)
    fresh.start()  # kserve's own start() would call any model ready
    assert not asyncio.run(repository.is_model_ready("planes"))
    with pytest.raises(ModelNotReady, match="not loaded"):
        call(fresh, {"instances": [{"b64": b64(pngs[0])}]})

    assert fresh.load() is True
    assert asyncio.run(repository.is_model_ready("planes"))
    assert call(fresh, {"instances": [{"b64": b64(pngs[0])}]})["predictions"][0]["model_name"] == (
        "planes"
    )


def good() -> dict[str, str]:
    return {"b64": b64(b"\x89PNG\r\n\x1a\n")}  # a PNG signature alone: truncated


V1_MISTAKES = [
    ({"instances": [{"b64": "not base64!"}]}, "instance 0: request text is not base64"),
    ({"instances": [{"b64": B64_TEXT}]}, "instance 0: not a PNG or JPEG image"),
    ({"instances": [good()]}, "instance 0: not a PNG or JPEG image"),
    ({"instances": [{"image": "x"}]}, "instance 0: request has no image under any of b64"),
    ({"instances": []}, '"instances" is empty'),
    ({"instances": {"b64": B64_TEXT}}, '"instances" must be a list, not dict'),
    ({"inputs": []}, '"inputs" is empty'),
    ({"inputs": {"a": [], "b": []}}, '"inputs" must name one input'),
    ({"instances": [{"b64": "x"}] * 65}, "the request holds more than 64 images"),
    ({"instances": [images_input([B64_TEXT])]}, "this is a V2 request: send it to /v2/models"),
    ({"images": []}, 'expected a JSON object {"instances"'),
    ([1, 2], 'expected a JSON object {"instances"'),
    (b"\x89PNG\r\n\x1a\n", "the body is not JSON"),
]


@pytest.mark.parametrize(("body", "reason"), V1_MISTAKES)
def test_v1_client_mistakes_are_invalid_input(
    predictor: PlanePredictor, body: object, reason: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        call(predictor, body)
    assert reason in raised.value.reason


def tensor(
    shape: list[int], data: list[Any] | None = None, datatype: str = "FP32"
) -> dict[str, Any]:
    size = int(np.prod(shape))
    return {
        "name": "preprocessed",
        "datatype": datatype,
        "shape": shape,
        "data": data or [0.0] * size,
    }


V2_MISTAKES = [
    ([{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}], "must be BYTES"),
    ([images_input(["not base64!"])], "input 'image' element 0: request text is not base64"),
    ([images_input([B64_TEXT])], "input 'image' element 0: not a PNG or JPEG image"),
    ([{**images_input([B64_TEXT]), "shape": [2]}], "different numbers of elements"),
    ([images_input([B64_TEXT] * 65)], "the request holds more than 64 images"),
    ([images_input([])], "input 'image' holds no image"),
    ([tensor([1, 3, 32, 32])], f"this model's preprocessing gives [-1, 3, {SIZE}, {SIZE}]"),
    ([tensor([1, 1, SIZE, SIZE])], "this model's preprocessing gives"),
    ([tensor([SIZE, SIZE])], "this model's preprocessing gives"),
    ([tensor([65, 3, SIZE, SIZE], [0.0])], "the request holds more than 64 images"),
    ([tensor([-1, 3, SIZE, SIZE], [0.0])], "is not a list of sizes"),
    ([tensor([1, 3, SIZE, SIZE], datatype="FP64")], "must be FP32, not FP64"),
    ([tensor([1, 3, SIZE, SIZE], [0.5] * 10)], "different numbers of values"),
    ([tensor([1, 3, SIZE, SIZE], [float("nan")] * 3 * SIZE * SIZE)], "NaN or infinite"),
    ([tensor([1, 3, SIZE, SIZE], ["x"] * 3 * SIZE * SIZE)], "is not a tensor of numbers"),
    ([{**tensor([1, 3, SIZE, SIZE]), "name": "pixels"}], "input 0 is not one this model takes"),
    ([{**tensor([1, 3, SIZE, SIZE]), "datatype": "F32"}], "not an unknown datatype"),
    ([images_input([B64_TEXT]), tensor([1, 3, SIZE, SIZE])], "expected exactly one input"),
    ([], "got 0"),
]


@pytest.mark.parametrize(("inputs", "reason"), V2_MISTAKES)
def test_v2_client_mistakes_are_invalid_input(
    predictor: PlanePredictor, inputs: list[dict[str, Any]], reason: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        call(predictor, v2(inputs))
    assert reason in raised.value.reason
