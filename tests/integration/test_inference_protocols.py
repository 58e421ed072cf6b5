"""The inference server through the Open Inference Protocol's own clients, as a real process.

`fetalmlops serve` runs once for the module, at DEBUG, with the trainer's `.mar` of a tiny CNN.
Every request is made by a third-party client as its users would make it: Triton's
``tritonclient.http`` (raw image bytes in a binary BYTES tensor, JSON without a Content-Type,
metadata, versions, the repository index) and KServe's own ``InferenceRESTClient`` (V1 and
V2), plus ``curl -d``-style bodies. A phantom study, patient name and MRN in its header and
banner, travels as raw bytes: the answers and the server's log must hold none of it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest
from PIL import Image
from tritonclient.utils import InferenceServerException

from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.phi import planted_phi, sidecar

from .model_versions import CLASSES, Version, build_version, phantom_pngs
from .processes import Serving, serving, wait_for

NAME, NUMBER = "fetal-planes", 7
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


@dataclass(frozen=True)
class Study:
    dicom: bytes
    phi: list[str]


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Version:
    return build_version(tmp_path_factory.mktemp("protocols-version"), NAME, NUMBER, seed=6)


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    return phantom_pngs(2, seed=17)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("protocols-study")
    generate(root, plan(1, seed=23)[:1], seed=23, fmt=OutputFormat.DICOM)
    (path,) = sorted((root / "dicom").glob("*.dcm"))
    return Study(path.read_bytes(), sorted(planted_phi([sidecar(path)])))


@pytest.fixture(scope="module")
def server(version: Version, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(version.layout.root, log, {"FETALMLOPS_LOG_LEVEL": "DEBUG"}) as running:
        yield running


@pytest.fixture
def client(server: Serving) -> Iterator[triton.InferenceServerClient]:
    connection = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield connection
    connection.close()


def image_input(items: list[bytes], binary_data: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=object), binary_data=binary_data)
    return tensor


def rows(result: triton.InferResult) -> np.ndarray:
    probabilities = result.as_numpy("probabilities")
    assert probabilities is not None
    return probabilities


def test_tritonclient_sends_raw_image_bytes_in_a_binary_bytes_tensor(
    client: triton.InferenceServerClient,
    server: Serving,
    version: Version,
    pngs: list[bytes],
    study: Study,
) -> None:
    # The issue: HTTP 500 'Failed to encode "b'..."', the whole file in the message.
    result = client.infer(NAME, [image_input([*pngs, study.dicom], binary_data=True)])

    expected = np.stack([version.expected(png) for png in pngs])
    np.testing.assert_allclose(rows(result)[:2], expected, atol=1e-5)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [label.decode() for label in labels] == [CLASSES[i] for i in rows(result).argmax(1)]
    # The DICOM, raw, is answered as the same file in base64 JSON is (cleaned, harmonised).
    as_json = httpx.post(
        f"{server.url}{V2}",
        json={
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(study.dicom).decode()],
                }
            ]
        },
        timeout=30,
    ).json()
    np.testing.assert_allclose(rows(result)[2], as_json["outputs"][0]["data"], atol=1e-6)
    response = json.dumps(result.get_response())
    assert [value for value in study.phi if value in response] == []


def test_tritonclient_json_needs_no_content_type(
    client: triton.InferenceServerClient, version: Version, pngs: list[bytes]
) -> None:
    # binary_data=False, tritonclient's default: base64 text in JSON, sent with no
    # Content-Type (and the outputs asked back as binary, which it reads).
    encoded = [base64.b64encode(png) for png in pngs]
    result = client.infer(NAME, [image_input(encoded, binary_data=False)])
    np.testing.assert_allclose(
        rows(result), np.stack([version.expected(png) for png in pngs]), atol=1e-5
    )
    outputs = [
        triton.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "label")
    ]
    as_json = client.infer(NAME, [image_input(encoded, binary_data=False)], outputs=outputs)
    np.testing.assert_allclose(rows(as_json), rows(result), atol=1e-6)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_v2_json_body_is_json_whatever_its_content_type(
    server: Serving, version: Version, pngs: list[bytes], content_type: str | None
) -> None:
    # The README's own `curl -d` sends the form content type.
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(pngs[0]).decode()]}]}  # fmt: skip
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = httpx.post(f"{server.url}{V2}", content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["outputs"][0]["data"], version.expected(pngs[0]), atol=1e-5
    )


def test_metadata_versions_and_repository_agree_with_the_answers(
    client: triton.InferenceServerClient,
) -> None:
    server = client.get_server_metadata()
    assert set(server["extensions"]) == {"model_repository_extension", "binary_tensor_data"}
    metadata = client.get_model_metadata(NAME)
    assert metadata["versions"] == [str(NUMBER)]  # was null, while answers said "7"
    assert client.get_model_metadata(NAME, model_version=str(NUMBER)) == metadata
    with pytest.raises(InferenceServerException) as other:
        client.get_model_metadata(NAME, model_version="8")
    assert other.value.status() == "404"
    assert client.is_model_ready(NAME, model_version=str(NUMBER))
    assert client.get_model_repository_index() == [
        {"name": NAME, "version": str(NUMBER), "state": "READY", "reason": ""}
    ]
    result = client.infer(
        NAME,
        [image_input([phantom_pngs(1, seed=3)[0]], binary_data=True)],
        model_version=str(NUMBER),
    )
    assert result.get_response()["model_version"] == str(NUMBER)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer(NAME, [image_input([b"x"], binary_data=True)], model_version="8")
    assert "this model serves version 7 only" in str(unknown.value)


def preprocessed(png: bytes, parameters: dict[str, object]) -> np.ndarray:
    """The ``preprocessed`` input built from the model metadata's parameters alone, as a client
    in another language would build it: no code of this project."""
    size, channels = (
        int(str(parameters["preprocessed_size"])),
        int(str(parameters["preprocessed_channels"])),
    )
    mean, std = (
        float(str(parameters["preprocessed_mean"])),
        float(str(parameters["preprocessed_std"])),
    )
    grey = Image.open(io.BytesIO(png)).convert("L")  # luminance, ITU-R BT.601
    side = max(grey.size)
    square = Image.new("L", (side, side), 0)  # padded with black, centred
    square.paste(grey, ((side - grey.width) // 2, (side - grey.height) // 2))
    pixels = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), np.float32)
    plane = (pixels / 255.0 - mean) / std
    return np.repeat(plane[None, None], channels, axis=1).astype(np.float32)  # N, C, H, W


def test_the_documented_preprocessing_is_the_models_own(
    client: triton.InferenceServerClient, version: Version, pngs: list[bytes]
) -> None:
    parameters = client.get_model_metadata(NAME)["parameters"]
    assert parameters["preprocessed_layout"] == "NCHW"
    tensor = np.concatenate([preprocessed(png, parameters) for png in pngs])
    for binary_data in (True, False):
        infer_input = triton.InferInput("preprocessed", list(tensor.shape), "FP32")
        infer_input.set_data_from_numpy(tensor, binary_data=binary_data)
        result = client.infer(NAME, [infer_input])
        np.testing.assert_allclose(
            rows(result), np.stack([version.expected(png) for png in pngs]), atol=1e-4
        )


def test_kserves_own_rest_client_over_v1_and_v2(
    server: Serving, version: Version, pngs: list[bytes]
) -> None:
    async def calls() -> tuple[object, ...]:
        v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
        v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            encoded = base64.b64encode(pngs[0]).decode()
            predicted = await v1.infer(server.url, {"instances": [{"b64": encoded}]}, NAME)
            raw = InferInput("image", [1], "BYTES")
            raw.set_data_from_numpy(np.array([pngs[0]], dtype=object), binary_data=True)
            binary = await v2.infer(server.url, InferRequest(NAME, [raw], "r-1"), NAME)
            text = InferInput("image", [1], "BYTES", [encoded])
            as_json = await v2.infer(server.url, InferRequest(NAME, [text], "r-2"), NAME)
            ready = await v2.is_model_ready(server.url, NAME)
            return predicted, binary, as_json, ready
        finally:
            await v1.close()
            await v2.close()

    predicted, binary, as_json, ready = asyncio.run(calls())
    expected = version.expected(pngs[0])
    assert isinstance(predicted, dict)
    (prediction,) = predicted["predictions"]
    np.testing.assert_allclose(
        [prediction["probabilities"][c] for c in CLASSES], expected, atol=1e-5
    )
    for answer in (binary, as_json):
        np.testing.assert_allclose(answer.outputs[0].as_numpy()[0], expected, atol=1e-5)  # type: ignore[attr-defined]
    assert ready is True


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"b64": "B64"}]},
        {"inputs": {"image_bytes": [{"b64": "B64"}]}},
        {"instances": [{"image_bytes": {"b64": "B64"}}]},
    ],
)
def test_v1_takes_tensorflow_servings_formats(
    server: Serving, version: Version, pngs: list[bytes], body: dict[str, object]
) -> None:
    text = json.dumps(body).replace("B64", base64.b64encode(pngs[1]).decode())
    response = httpx.post(
        f"{server.url}{V1}", content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    np.testing.assert_allclose(
        [prediction["probabilities"][c] for c in CLASSES], version.expected(pngs[1]), atol=1e-5
    )


def bomb() -> bytes:
    """78 KB of PNG that decodes to 9000 x 9000 pixels: ingest refuses it with 413."""
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_decompression_bomb_is_413_on_every_route(
    server: Serving, client: triton.InferenceServerClient
) -> None:
    data = bomb()
    assert len(data) < 100_000
    v1 = httpx.post(
        f"{server.url}{V1}", json={"instances": [{"b64": base64.b64encode(data).decode()}]}
    )
    assert v1.status_code == 413, v1.text
    assert v1.json() == {"error": "instance 0: the image is over the limit of 8192 pixels a side"}
    with pytest.raises(InferenceServerException) as refused:
        client.infer(NAME, [image_input([data], binary_data=True)])
    assert refused.value.status() == "413"
    assert "over the limit of 8192 pixels a side" in str(refused.value)
    many = {"instances": [{"b64": base64.b64encode(phantom_pngs(1, seed=4)[0]).decode()}] * 65}
    too_many = httpx.post(f"{server.url}{V1}", json=many, timeout=30)
    assert (too_many.status_code, too_many.json()) == (
        413,
        {"error": "the request holds more than 64 images"},
    )


READY_ROUTE = '"route": "/v2/models/{model_name}/ready"'


def logged_after_a_probe(server: Serving) -> str:
    """The server's log once every request before this call is in it: a readiness probe is
    logged last (after its answer is sent), so the log is read once its line is there."""
    before = server.log.read_text(errors="replace").count(READY_ROUTE)
    httpx.get(f"{server.url}/v2/models/{NAME}/ready")
    wait_for(
        lambda: server.log.read_text(errors="replace").count(READY_ROUTE) > before,
        10,
        "the probe logged",
    )
    return server.log.read_bytes().decode("utf-8", errors="replace")


def test_the_access_log_names_routes_never_urls(server: Serving) -> None:
    planted = "Doe^Jane-MRN-55501"
    httpx.get(f"{server.url}/v2/models/{planted}?patient={planted}")
    httpx.post(f"{server.url}/v1/models/{planted}:predict", json={"instances": []})
    httpx.get(f"{server.url}/{planted}/nowhere")

    text = logged_after_a_probe(server)
    logged = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [entry for entry in logged if entry["logger"] == "fetalmlops.access"]
    routes = {(entry["method"], entry["route"], entry["status"]) for entry in access}
    assert ("GET", "/v2/models/{model_name}", 404) in routes
    assert ("POST", "/v1/models/{model_name}:predict", 404) in routes
    assert ("GET", "unmatched", 404) in routes
    assert all(set(entry) >= {"method", "route", "status", "duration_ms"} for entry in access)
    assert not [entry for entry in logged if entry["logger"] == "uvicorn.access"]
    assert planted not in text and "patient=" not in text
    assert "DEBUG" in text


def test_no_planted_value_reaches_an_answer_or_the_log(
    client: triton.InferenceServerClient, server: Serving, study: Study
) -> None:
    truncated = study.dicom[: len(study.dicom) // 2]
    answers = [json.dumps(client.infer(NAME, [image_input([study.dicom], True)]).get_response())]
    with pytest.raises(InferenceServerException) as refused:
        client.infer(NAME, [image_input([truncated], binary_data=True)])
    assert refused.value.status() == "400"
    answers.append(str(refused.value))
    encoded = base64.b64encode(truncated).decode()
    answers.append(httpx.post(f"{server.url}{V1}", json={"instances": [{"b64": encoded}]}).text)

    text = logged_after_a_probe(server)
    assert [value for value in study.phi if value in text] == []
    assert [value for value in study.phi for answer in answers if value in answer] == []
