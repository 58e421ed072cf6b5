"""The inference server's guard as a real process: tokens, size limits, no 5xx for mistakes.

`fetalmlops serve` runs once for the module with two bearer tokens (one from the environment,
one from a tokens file) and a 1 MiB request limit; every request goes over loopback HTTP
through uvicorn, the guard and KServe's routing. The serve command runs as its standalone
Typer app: the same function as `fetalmlops serve`, without the seconds the `fetalmlops` CLI
spends loading every other command.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from fetalmlops.archive.preprocessing import decode

from .model_versions import PREP, Version, build_version, phantom_pngs, same
from .processes import SERVE, serving

NAME = "fetal-planes"
ENV_TOKEN, FILE_TOKEN = "token-from-the-environment", "token-from-the-file"
LIMIT = 1024 * 1024
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


@dataclass(frozen=True)
class Served:
    url: str
    version: Version
    pngs: list[bytes]
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("guarded")
    version = build_version(root, NAME, 3, seed=5)
    tokens_file = root / "tokens"
    tokens_file.write_text(f"# the Secret mounted in the pod\n\n{FILE_TOKEN}\n")
    env = {
        "FETALMLOPS_INFERENCE_TOKENS": json.dumps([ENV_TOKEN]),
        "FETALMLOPS_INFERENCE_TOKENS_FILE": str(tokens_file),
        "FETALMLOPS_INFERENCE_MAX_REQUEST_BYTES": str(LIMIT),
    }
    with serving(version.layout.root, root / "serve.log", env) as running:
        yield Served(running.url, version, phantom_pngs(2, seed=5), running.log)


@pytest.fixture
def http(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def predict_body(served: Served) -> dict[str, Any]:
    return {"instances": [{"b64": base64.b64encode(png).decode()} for png in served.pngs]}


def test_each_configured_token_is_accepted(http: httpx.Client, served: Served) -> None:
    for token in (ENV_TOKEN, FILE_TOKEN):
        response = http.post(V1, json=predict_body(served), headers=bearer(token))
        assert response.status_code == 200, response.text
        for prediction, png in zip(response.json()["predictions"], served.pngs, strict=True):
            assert same(prediction["probabilities"], served.version.expected(png).tolist())


@pytest.mark.parametrize("verb", ["predict", "explain"])
@pytest.mark.parametrize("cloudevent", [False, True], ids=["plain", "cloudevent"])
def test_an_answer_repeats_no_request_header(
    http: httpx.Client, served: Served, verb: str, cloudevent: bool
) -> None:
    sent = bearer(ENV_TOKEN) | {"x-request-id": "ACC-0042-DOE", "User-Agent": "viewer DOE^JANE"}
    if cloudevent:  # KServe's binary-mode CloudEvents
        sent |= {"ce-specversion": "1.0", "ce-id": "ACC-0042-DOE", "ce-source": "pacs-DOE",
                 "ce-type": "org.example.DOE"}  # fmt: skip
    response = http.post(f"/v1/models/{NAME}:{verb}", json=predict_body(served), headers=sent)

    assert response.status_code == 200, response.text
    answer = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert ENV_TOKEN not in answer and "DOE" not in answer, answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", V1),
        ("POST", V2),
        ("GET", "/v1/models"),
        ("GET", "/v2/models"),
        ("GET", f"/v2/models/{NAME}"),
        ("GET", f"/v2/models/{NAME}/ready"),
        ("POST", f"/v2/repository/models/{NAME}/unload"),
        ("POST", f"/v2/repository/models/{NAME}/load"),
        ("GET", "/"),
    ],
)
def test_without_the_right_token_every_model_route_is_401(
    http: httpx.Client, served: Served, method: str, path: str
) -> None:
    for headers in ({}, bearer("not-a-token"), bearer(ENV_TOKEN + "x")):
        response = http.request(method, path, json=predict_body(served), headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in response.json()["error"]
    # The unload that was refused did not happen.
    assert http.get(f"/v2/models/{NAME}/ready", headers=bearer(ENV_TOKEN)).json()["ready"]


def test_probes_and_metrics_need_no_token(http: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert http.get(path).status_code == 200, path
    metrics = http.get("/metrics")
    assert metrics.status_code == 200 and "request_predict_seconds" in metrics.text


def test_a_declared_oversize_body_is_413_before_it_is_sent(served: Served) -> None:
    # Only the head goes out: the answer comes without the server waiting for the body.
    port = int(served.url.rsplit(":", 1)[1])
    head = (
        f"POST {V1} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ENV_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {50 * LIMIT}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head.encode())
        received = b""
        while chunk := connection.recv(65536):  # until the server closes the connection
            received += chunk
    answer = received.decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413 "), answer
    # The declared length is the client's to write: the answer names the limit only.
    assert json.loads(body) == {"error": f"the request body is over the limit of {LIMIT} bytes"}


def test_a_chunked_body_is_cut_off_at_the_limit(http: httpx.Client, served: Served) -> None:
    def chunks(total: int) -> Iterator[bytes]:
        for start in range(0, total, 64 * 1024):
            yield b" " * min(64 * 1024, total - start)

    for path in (V1, V2):
        response = http.post(path, content=chunks(LIMIT + 100_000), headers=bearer(ENV_TOKEN))
        assert response.status_code == 413, response.text
        assert "over the limit" in response.json()["error"]
    # Under the limit a chunked body is served as any other.
    body = json.dumps(predict_body(served)).encode()
    parts = iter([body[:1000], body[1000:]])
    headers = bearer(ENV_TOKEN) | {"Content-Type": "application/json"}
    response = http.post(V1, content=parts, headers=headers)
    assert response.status_code == 200, response.text


@dataclass(frozen=True)
class BinaryRequest:
    body: bytes
    json_length: str | None


def binary_request(
    images: torch.Tensor,
    changes: dict[str, Any] | None = None,
    tail: bytes = b"",
    json_length: str | None = "exact",
) -> BinaryRequest:
    raw = images.numpy().astype(np.float32).tobytes()
    tensor = {"name": "preprocessed", "datatype": "FP32", "shape": list(images.shape),
              "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor | (changes or {})]}).encode()
    length = str(len(header)) if json_length == "exact" else json_length
    return BinaryRequest(header + raw + tail, length)


def post_binary(http: httpx.Client, request: BinaryRequest) -> httpx.Response:
    headers = bearer(ENV_TOKEN) | {"Content-Type": "application/octet-stream"}
    if request.json_length is not None:
        headers["Inference-Header-Content-Length"] = request.json_length
    return http.post(V2, content=request.body, headers=headers)


def test_a_binary_tensor_request_is_answered(http: httpx.Client, served: Served) -> None:
    images = torch.stack([decode(png, PREP) for png in served.pngs])
    response = post_binary(http, binary_request(images))
    assert response.status_code == 200, response.text
    probabilities = response.json()["outputs"][0]
    rows = np.array(probabilities["data"]).reshape(probabilities["shape"])
    expected = np.stack([served.version.expected(png) for png in served.pngs])
    np.testing.assert_allclose(rows, expected, atol=1e-5)


# What KServe 0.21 itself answers, before the server's check: 500 for all but the first two.
# No reason repeats what the client wrote (the length header, a shape, a size).
BINARY_MISTAKES = [
    # Without the length header the body is JSON, as Triton and KServe mean it; kserve: 400
    ({"json_length": None}, "the body is not JSON"),
    ({"json_length": "12o"}, "Inference-Header-Content-Length must be a number of bytes"),  # 500
    ({"json_length": "99999999"}, "is more than the"),  # 400 by chance, or 200
    ({"changes": {"shape": [3, 3, 64, 64]}}, "its shape of FP32 does not take binary_data_size"),
    ({"changes": {"name": None}}, 'input 0 has no "name"'),  # 500 KeyError
    ({"changes": {"shape": "1x3x64x64"}}, "is not a list of sizes"),  # 500 TypeError
    ({"changes": {"parameters": {"binary_data_size": "all"}}}, "binary_data_size must be"),
    ({"changes": {"parameters": {"binary_data_size": 10**6}}}, "more than the"),  # 200: accepted
    ({"tail": b"trailing"}, "do not add up to the 49160 bytes"),  # 200: ignored
]


@pytest.mark.parametrize(("mistake", "reason"), BINARY_MISTAKES)
def test_binary_extension_mistakes_are_400_with_the_reason(
    http: httpx.Client, served: Served, mistake: dict[str, Any], reason: str
) -> None:
    images = decode(served.pngs[0], PREP).unsqueeze(0)
    response = post_binary(http, binary_request(images, **mistake))
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    for written in ("12o", "99999999", "147456", "1x3x64x64", '"all"', "1000000"):
        assert written not in response.text


def test_a_malformed_json_header_part_is_400(http: httpx.Client) -> None:
    for header in (b"{not json", b'["inputs"]', b'{"outputs": []}', b'{"inputs": 3}'):
        request = BinaryRequest(header + b"\x00" * 8, str(len(header)))
        response = post_binary(http, request)
        assert response.status_code == 400, (header, response.text)


def test_loading_a_model_the_server_does_not_know_is_404(http: httpx.Client) -> None:
    response = http.post("/v2/repository/models/no-such-model/load", headers=bearer(ENV_TOKEN))
    assert response.status_code == 404, response.text  # kserve 0.21: 503 "not ready"


def test_no_token_reaches_the_log(served: Served) -> None:
    text = served.log.read_text()
    assert "401" in text  # the refusals above were logged, without what they carried
    assert ENV_TOKEN not in text and FILE_TOKEN not in text


def refused(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=os.environ | env, capture_output=True, text=True, timeout=120, check=False
    )


def test_without_a_token_a_public_address_is_refused(served: Served, tmp_path: Path) -> None:
    model_dir = str(served.version.layout.root)
    command = [*SERVE, "--model-dir", model_dir, "--host", "0.0.0.0", "--http-port", "1"]
    result = refused(command, {})
    assert result.returncode == 2, result.stderr
    assert "refusing to serve on 0.0.0.0 without a bearer token" in result.stderr
    assert "FETALMLOPS_INFERENCE_TOKENS_FILE" in result.stderr

    missing = tmp_path / "no-such-tokens"
    result = refused(
        [*SERVE, "--model-dir", model_dir], {"FETALMLOPS_INFERENCE_TOKENS_FILE": str(missing)}
    )
    assert result.returncode == 2
    assert f"cannot read the bearer tokens file {missing}" in result.stderr

    # The service's own entry point, as its image runs it (FETALMLOPS_HTTP_HOST=0.0.0.0):
    # a service logs JSON on stdout, where the platform collects it.
    result = refused(
        [sys.executable, "-m", "fetalmlops.inference"], {"FETALMLOPS_HTTP_HOST": "0.0.0.0"}
    )
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a bearer token" in result.stdout
