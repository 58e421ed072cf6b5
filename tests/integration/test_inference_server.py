"""The inference service as a real process: KServe's ModelServer over loopback HTTP.

`fetalmlops serve --model-dir` runs once for the module with the trainer's `.mar` of a tiny
CNN; every request goes over real HTTP through KServe's REST server, its routing and its error
handlers. The `s3://` variant runs `fetalmlops run inference` against the real MinIO.
"""

from __future__ import annotations

import base64
import io
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from fetalmlops.archive.preprocessing import decode
from fetalmlops.common.settings import Settings, settings_env
from fetalmlops.common.store import open_store

from .model_versions import CLASSES, PREP, Version, build_version, phantom_pngs
from .processes import SERVE, ServiceProcess, Serving, free_port, serving

NAME, VERSION = "fetal-planes", 7


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Version:
    return build_version(tmp_path_factory.mktemp("inference-version"), NAME, VERSION, seed=2)


@pytest.fixture(scope="module")
def pngs() -> list[bytes]:
    return phantom_pngs(4, seed=13)


@pytest.fixture(scope="module")
def server(version: Version, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(version.layout.root, log, ready=f"/v2/models/{NAME}/ready") as running:
        print(f"fetalmlops serve ready in {running.startup_s:.1f} s")
        yield running


@pytest.fixture
def client(server: Serving) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_same(probabilities: dict[str, float], expected: np.ndarray) -> None:
    assert list(probabilities) == CLASSES
    np.testing.assert_allclose(list(probabilities.values()), expected, atol=1e-5)


def test_v1_predict_answers_every_instance(
    client: httpx.Client, version: Version, pngs: list[bytes]
) -> None:
    body = {"instances": [{"b64": b64(png)} for png in pngs]}
    response = client.post(f"/v1/models/{NAME}:predict", json=body)

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for prediction, png in zip(predictions, pngs, strict=True):
        expected = version.expected(png)
        assert_same(prediction["probabilities"], expected)
        assert prediction["label"] == CLASSES[int(expected.argmax())]
        assert (prediction["model_name"], prediction["model_version"]) == (NAME, str(VERSION))
    # As `curl -d` sends it: JSON under a form content type.
    form = client.post(
        f"/v1/models/{NAME}:predict",
        content=httpx.Request("POST", "/", json=body).content,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200

    def without_ids(answer: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if k != "prediction_id"} for p in answer["predictions"]]

    assert without_ids(form.json()) == without_ids(response.json())
    ids = [p["prediction_id"] for p in (*predictions, *form.json()["predictions"])]
    assert len(set(ids)) == len(ids), "every prediction has an id of its own"


def test_v2_infer_with_images_and_with_preprocessed_tensors(
    client: httpx.Client, version: Version, pngs: list[bytes]
) -> None:
    pngs = pngs[:2]
    images = {"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(p) for p in pngs]}
    tensors = torch.stack([decode(png, PREP) for png in pngs])
    preprocessed = {
        "name": "preprocessed",
        "datatype": "FP32",
        "shape": list(tensors.shape),
        "data": tensors.flatten().tolist(),
    }
    for request in (images, preprocessed):
        response = client.post(f"/v2/models/{NAME}/infer", json={"id": "a1", "inputs": [request]})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["id"], answer["model_name"], answer["model_version"]) == ("a1", NAME, "7")
        probabilities, labels = answer["outputs"]
        assert probabilities["shape"] == [2, len(CLASSES)]
        rows = np.array(probabilities["data"]).reshape(2, len(CLASSES))
        expected = np.stack([version.expected(png) for png in pngs])
        np.testing.assert_allclose(rows, expected, atol=1e-5)
        assert labels["data"] == [CLASSES[i] for i in expected.argmax(1)]


def test_v2_metadata_readiness_and_liveness(client: httpx.Client) -> None:
    metadata = client.get(f"/v2/models/{NAME}").json()
    assert metadata["name"] == NAME
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("image", "BYTES", [-1]),
        ("preprocessed", "FP32", [-1, 3, 64, 64]),
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP32", [-1, len(CLASSES)]),
        ("label", "BYTES", [-1]),
    ]
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert client.get(f"/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "failures": {}}
    assert "request_predict_seconds" in client.get("/metrics").text


def image_request(data: list[Any], datatype: str = "BYTES") -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": datatype, "shape": [len(data)], "data": data}]}


def grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buffer, "PNG")
    return buffer.getvalue()


GREY_PNG = grey_png()
NOT_AN_IMAGE = b64(b"plain text, not a picture")
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
# The names served, never the name asked for: the path is the client's.
NOT_SERVED = f"no model of that name is served here (this server serves: {NAME})"
MISTAKES = [
    (V1, {"instances": [{"b64": "%%% not base64"}]}, 400, "instance 0: request text is not base64"),
    (V1, {"instances": [{"b64": NOT_AN_IMAGE}]}, 400, "instance 0: not a PNG or JPEG image"),
    (V1, {"instances": []}, 400, '"instances" is empty'),
    (V1, {"instances": "x"}, 400, '"instances" must be a list, not str'),
    (V1, {"inputs": []}, 400, '"inputs" is empty'),
    (V1, {"images": []}, 400, 'expected a JSON object {"instances"'),
    (V2, image_request(["%%% not base64"]), 400, "input 'image' element 0: request text is not"),
    (V2, image_request([NOT_AN_IMAGE]), 400, "input 'image' element 0: not a PNG or JPEG image"),
    (V2, image_request([1.0], "FP32"), 400, "input 'image' must be BYTES"),
    (
        V2,
        {"inputs": [{"name": "preprocessed", "datatype": "FP32", "shape": [1, 3, 32, 32],
                     "data": [0.0] * 3 * 32 * 32}]},
        400,
        "this model's preprocessing gives [-1, 3, 64, 64]",
    ),
    (
        V2,
        {"inputs": [{"name": "preprocessed", "datatype": "INT64", "shape": [1, 3, 64, 64],
                     "data": [0] * 3 * 64 * 64}]},
        400,
        "must be FP32, not INT64",
    ),
    (V2, image_request([b64(GREY_PNG)]) | {"outputs": [{"name": "nope"}]}, 400,
     "output 0 is not one this model gives: 'probabilities' or 'label'"),
    ("/v1/models/nosuch:predict", {"instances": [{"b64": NOT_AN_IMAGE}]}, 404, NOT_SERVED),
    ("/v2/models/nosuch/infer", image_request([NOT_AN_IMAGE]), 404, NOT_SERVED),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "reason"), MISTAKES)
def test_client_mistakes_get_4xx_with_the_reason(
    client: httpx.Client, path: str, body: Any, status: int, reason: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert "nosuch" not in response.text and "nope" not in response.text


@pytest.mark.parametrize(
    ("path", "content", "content_type"),
    [
        (V1, b"\x89PNG\r\n\x1a\n", "image/png"),
        (V1, b"{not json", "application/json"),
        (V2, b"{not json", "application/json"),
        (V2, b'{"inputs": "x"}', "application/json"),
        (V2, b"\x89PNG\r\n\x1a\n", "application/octet-stream"),
    ],
)
def test_malformed_bodies_are_4xx_never_5xx(
    client: httpx.Client, path: str, content: bytes, content_type: str
) -> None:
    response = client.post(path, content=content, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text


def test_the_server_listens_on_loopback_only(server: Serving) -> None:
    listening = {
        c.laddr.ip
        for c in psutil.Process(server.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}


def test_a_folder_without_a_model_is_refused_before_serving(tmp_path: Path) -> None:
    (tmp_path / "model-store").mkdir()
    result = subprocess.run(
        [*SERVE, "--model-dir", str(tmp_path), "--http-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "no .mar in" in result.stderr


@pytest.mark.stack
def test_run_inference_serves_a_version_from_minio(
    stack_settings: Callable[[str | None], Settings],
    version: Version,
    pngs: list[bytes],
    tmp_path: Path,
) -> None:
    trainer = stack_settings("trainer")
    store, bucket = open_store(trainer), trainer.buckets.models
    prefix = f"inference-test-{uuid.uuid4().hex[:8]}/v{VERSION}/"
    env = settings_env(stack_settings("inference")) | {
        "FETALMLOPS_INFERENCE_MODEL_URI": version.upload(store, bucket, prefix)
    }
    service = ServiceProcess("inference", env, tmp_path / "inference.log")
    try:
        service.start(timeout_s=90)
        body = {"instances": [{"b64": b64(pngs[0])}]}
        response = httpx.post(f"{service.url}/v1/models/{NAME}:predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert_same(response.json()["predictions"][0]["probabilities"], version.expected(pngs[0]))
        assert service.stop() == 0
    finally:
        service.stop()
        for info in list(store.list(bucket, prefix)):
            store.delete(bucket, info.key)
