"""The trainer's `.mar` served by a real TorchServe 0.12 (Java frontend, Python worker).

No Kafka, MinIO or PostgreSQL: only `torchserve` from the virtual environment and `java`.
Three servers start here (about 6 s each on two cores): one plain, for `/predictions`; then
the version's own config.properties, as KServe's TorchServe runtime starts it, with the KServe
v1 and v2 envelopes that KServe switches on through TS_SERVICE_ENVELOPE.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import port_in_use
from fetalmlops.stack.torchserve import Envelope, TorchServe, running_torchserve

from .model_versions import CLASSES, Version, build_version, phantom_pngs

NAME, VERSION = "fetal_planes", 7


@dataclass(frozen=True)
class Served:
    version: Version
    pngs: list[bytes]

    @property
    def layout(self) -> ModelLayout:
        return self.version.layout

    def expected(self, png: bytes) -> np.ndarray:
        return self.version.expected(png)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("torchserve-version")
    return Served(build_version(root, NAME, VERSION, seed=1), phantom_pngs(3, seed=11))


@pytest.fixture(scope="module")
def torchserve(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    workdir = tmp_path_factory.mktemp("torchserve")
    with running_torchserve(served.layout.mar.parent, [f"{NAME}={NAME}.mar"], workdir) as server:
        print(f"TorchServe ready in {server.startup_s:.1f} s")
        yield server
    assert_stopped(server)


def assert_stopped(server: TorchServe) -> None:
    assert server.process.poll() is not None
    listening = [port for port in server.ports.all() if port_in_use(port)]
    assert not listening, f"ports {listening} still held after TorchServe stopped"


def post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read())


def assert_same_answer(answer: dict[str, Any], expected: np.ndarray) -> None:
    assert list(answer["probabilities"]) == CLASSES
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected, atol=1e-4)
    assert answer["label"] == CLASSES[int(expected.argmax())]


def test_predictions_equal_the_in_process_model(torchserve: TorchServe, served: Served) -> None:
    for png in served.pngs:
        status, answer = post(f"{torchserve.inference_url}/predictions/{NAME}", png, "image/png")
        assert status == 200, answer
        assert_same_answer(answer, served.expected(png))


def test_base64_text_and_json_bodies_are_understood(torchserve: TorchServe, served: Served) -> None:
    png, url = served.pngs[0], f"{torchserve.inference_url}/predictions/{NAME}"
    encoded = base64.b64encode(png)
    for body, content_type in [
        (encoded, "text/plain"),
        (json.dumps({"b64": encoded.decode()}).encode(), "application/json"),
    ]:
        status, answer = post(url, body, content_type)
        assert status == 200, answer
        assert_same_answer(answer, served.expected(png))


def test_garbage_gets_an_error_and_the_worker_keeps_serving(
    torchserve: TorchServe, served: Served
) -> None:
    url = f"{torchserve.inference_url}/predictions/{NAME}"
    for garbage in (b"\x89PNG\r\n\x1a\n truncated", b"not an image at all"):
        status, answer = post(url, garbage, "application/octet-stream")
        assert status == 400
        assert "PNG or JPEG" in answer["error"]
    status, answer = post(url, served.pngs[1], "image/png")
    assert status == 200
    assert_same_answer(answer, served.expected(served.pngs[1]))


def test_kserve_v1_body_without_the_envelope_is_refused_with_the_fix(
    torchserve: TorchServe, served: Served
) -> None:
    body = json.dumps({"instances": [{"b64": base64.b64encode(served.pngs[0]).decode()}]})
    status, answer = post(
        f"{torchserve.inference_url}/v1/models/{NAME}:predict", body.encode(), "application/json"
    )
    assert status == 400
    assert "TS_SERVICE_ENVELOPE=kserve" in answer["error"]


def kserve_v1(served: Served, url: str) -> None:
    instances = [{"data": base64.b64encode(png).decode()} for png in served.pngs[:2]]
    instances.append({"b64": base64.b64encode(b"garbage").decode()})
    status, answer = post(
        f"{url}/v1/models/{NAME}:predict",
        json.dumps({"instances": instances}).encode(),
        "application/json",
    )
    assert status == 200, answer
    predictions = answer["predictions"]
    for png, prediction in zip(served.pngs[:2], predictions, strict=False):
        assert_same_answer(prediction, served.expected(png))
    assert "PNG or JPEG" in predictions[2]["error"]


def kserve_v2(served: Served, url: str) -> None:
    inputs = [
        {
            "name": f"scan-{i}",
            "shape": [1],
            "datatype": "BYTES",
            "data": [base64.b64encode(png).decode()],
        }
        for i, png in enumerate(served.pngs[:2])
    ]
    status, answer = post(
        f"{url}/v2/models/{NAME}/infer",
        json.dumps({"id": "request-1", "inputs": inputs}).encode(),
        "application/json",
    )
    assert status == 200, answer
    assert answer["id"] == "request-1"
    assert (answer["model_name"], answer["model_version"]) == (NAME, str(VERSION))
    for png, output, sent in zip(served.pngs[:2], answer["outputs"], inputs, strict=True):
        assert (output["name"], output["datatype"], output["shape"]) == (sent["name"], "BYTES", [1])
        assert_same_answer(output["data"][0], served.expected(png))


PROTOCOLS: list[tuple[Envelope, Callable[[Served, str], None]]] = [
    ("kserve", kserve_v1),
    ("kservev2", kserve_v2),
]


@pytest.mark.parametrize(("envelope", "protocol"), PROTOCOLS)
def test_packaged_config_serves_the_kserve_protocols(
    envelope: Envelope, protocol: Callable[[Served, str], None], served: Served, tmp_path: Path
) -> None:
    with running_torchserve(
        served.layout.mar.parent,
        [NAME],
        tmp_path,
        envelope=envelope,
        ts_config=served.layout.config_properties,
    ) as server:
        print(f"TorchServe ({envelope}) ready in {server.startup_s:.1f} s")
        described = get_json(f"{server.management_url}/models/{NAME}")
        # The model_snapshot loaded it (its maxBatchDelay, not --models' default of 100 ms).
        assert described[0]["maxBatchDelay"] == 10
        assert described[0]["modelVersion"] == str(VERSION)
        protocol(served, server.inference_url)
    assert_stopped(server)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_a_server_that_cannot_start_fails_fast_with_its_log(served: Served, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with (
            pytest.raises(StackError, match="exited") as failure,
            running_torchserve(served.layout.mar.parent, f"{NAME}.mar", tmp_path, (port, 0, 0)),
        ):
            pass
    assert f"Failed to bind to address: http://127.0.0.1:{port}" in str(failure.value)
    assert time.monotonic() - started < 30
