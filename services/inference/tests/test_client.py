"""`PlaneClient` against a real `fetalmlops serve` process serving the conftest's `.mar`.

The server starts once for the module (a few seconds: kserve and torch import), with a bearer
token; every call goes over loopback HTTP through its guard and KServe's REST server. The
answers are checked against the archive's own handler run in this process, as TorchServe
would run it.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.inference.client import InferenceError, PlaneClient, Prediction, main

from .conftest import NAME, SIZE, VERSION, TorchServeWorker

SERVE = [str(Path(sys.executable).with_name("fetalmlops")), "serve"]
STARTUP_S = 90
TOKEN = "client-test-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(client: PlaneClient, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if client.ready():
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"not ready in {STARTUP_S} s: {log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(
    layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    command = [*SERVE, "--model-dir", str(layout.root), "--http-port", str(port)]
    env = {**os.environ, "FETALMLOPS_INFERENCE_TOKENS": json.dumps([TOKEN])}
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    try:
        with PlaneClient(url, NAME, TOKEN, timeout=5) as probe:
            wait_until_ready(probe, process, log)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            process.kill()


@pytest.fixture
def client(server: tuple[str, subprocess.Popen[bytes]]) -> Iterator[PlaneClient]:
    with PlaneClient(server[0], NAME, TOKEN) as plane_client:
        yield plane_client


def expected(worker: TorchServeWorker, pngs: list[bytes]) -> list[Prediction]:
    return [
        Prediction(answer["label"], answer["probabilities"], NAME, str(VERSION), "champion")
        for answer in worker.classifier.answer(pngs)
    ]


def assert_close(actual: list[Prediction], wanted: list[Prediction]) -> None:
    assert len(actual) == len(wanted)
    for got, want in zip(actual, wanted, strict=True):
        assert (got.label, got.model_name, got.model_version, got.arm) == (
            want.label,
            want.model_name,
            want.model_version,
            want.arm,
        )
        assert list(got.probabilities) == list(want.probabilities)
        assert got.probabilities == pytest.approx(want.probabilities, abs=1e-5)


def test_predict_and_infer_give_the_archives_answers(
    client: PlaneClient, pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    predicted, inferred = client.predict(pngs), client.infer(pngs)

    assert_close(predicted, expected(torchserve, pngs))
    assert_close(inferred, predicted)
    assert client.ready() is True


def test_a_non_image_raises_400_with_the_servers_reason(client: PlaneClient) -> None:
    with pytest.raises(InferenceError) as v1:
        client.predict([b"plain text, not a picture"])
    with pytest.raises(InferenceError) as v2:
        client.infer([b"plain text, not a picture"])

    assert v1.value.status == 400
    assert v1.value.reason.startswith("instance 0: not a PNG or JPEG image")
    assert v2.value.status == 400
    assert v2.value.reason.startswith("input 'image' element 0: not a PNG or JPEG image")


def test_explain_answers_a_heatmap_for_the_asked_target(
    client: PlaneClient, pngs: list[bytes]
) -> None:
    [prediction] = client.predict(pngs[:1])

    explanation = client.explain(pngs[0])
    other = next(c for c in prediction.probabilities if c != prediction.label)
    targeted = client.explain(pngs[0], target=other)

    assert (explanation["label"], explanation["target"]) == (prediction.label, prediction.label)
    assert explanation["method"] == "gradcam"
    assert explanation["heatmap"]["shape"] == [SIZE, SIZE]
    assert targeted["target"] == other
    with pytest.raises(InferenceError) as error:
        client.explain(pngs[0], method="lime")
    assert (error.value.status, error.value.reason) == (
        400,
        "unknown method: one of ['gradcam', 'shap']",
    )


def test_the_bearer_token_is_sent_and_a_refusal_says_why(
    server: tuple[str, subprocess.Popen[bytes]], pngs: list[bytes]
) -> None:
    for token, reason in ((None, "missing bearer token"), ("wrong", "invalid bearer token")):
        stranger = PlaneClient(server[0], NAME, token)
        with stranger, pytest.raises(InferenceError) as error:
            stranger.predict(pngs[:1])
        assert (error.value.status, error.value.reason.startswith(reason)) == (401, True)


def test_an_unknown_model_is_404_on_every_route(
    server: tuple[str, subprocess.Popen[bytes]], pngs: list[bytes]
) -> None:
    with PlaneClient(server[0], "nosuch", TOKEN) as unknown:
        for call in (
            lambda: unknown.predict(pngs[:1]),
            lambda: unknown.infer(pngs[:1]),
            lambda: unknown.explain(pngs[0]),
            unknown.ready,
        ):
            with pytest.raises(InferenceError) as error:
                call()
            # Not a 404 for a path it does not route: the names it serves, never the one asked.
            assert error.value.status == 404
            assert error.value.reason == (
                f"no model of that name is served here (this server serves: {NAME})"
            )


def test_one_connection_serves_many_requests(
    client: PlaneClient, server: tuple[str, subprocess.Popen[bytes]], pngs: list[bytes]
) -> None:
    for png in pngs * 2:
        client.predict([png])
    with pytest.raises(InferenceError):
        client.predict([b"not an image"])  # an error answer keeps the connection too
    client.infer(pngs[:1])

    port = int(server[0].rsplit(":", 1)[1])
    peers = {
        c.raddr.port
        for c in psutil.Process(server[1].pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    }
    assert len(peers) == 1


def test_a_client_per_thread_answers_concurrently(
    server: tuple[str, subprocess.Popen[bytes]], pngs: list[bytes], torchserve: TorchServeWorker
) -> None:
    wanted = expected(torchserve, pngs)
    results: dict[int, list[Prediction]] = {}

    def work(index: int) -> None:
        with PlaneClient(server[0], NAME, TOKEN) as own:
            results[index] = [own.predict([png])[0] for png in pngs]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(results) == [0, 1, 2, 3]
    for answers in results.values():
        assert_close(answers, wanted)


class ClosesAfterEachAnswer(http.server.BaseHTTPRequestHandler):
    """Answers on HTTP/1.1 without announcing a close, then closes: what a client meets when a
    server drops an idle keep-alive connection between two requests."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"name": "m", "ready": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # the base class writes every request to stderr


def test_a_connection_the_server_dropped_is_replaced() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ClosesAfterEachAnswer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with PlaneClient(f"http://127.0.0.1:{httpd.server_address[1]}", "m") as client:
            assert [client.ready() for _ in range(3)] == [True, True, True]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_command_line_prints_one_line_per_file(
    server: tuple[str, subprocess.Popen[bytes]],
    pngs: list[bytes],
    torchserve: TorchServeWorker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = []
    for index, png in enumerate(pngs[:2]):
        files.append(tmp_path / f"frame{index}.png")
        files[-1].write_bytes(png)

    main([server[0], NAME, *map(str, files), "--token", TOKEN])

    lines = capsys.readouterr().out.splitlines()
    wanted = expected(torchserve, pngs[:2])
    assert [line.split("\t")[:2] for line in lines] == [
        [str(path), want.label] for path, want in zip(files, wanted, strict=True)
    ]
    with pytest.raises(SystemExit) as exit_code:
        main([server[0], "nosuch", str(files[0]), "--token", TOKEN])
    assert exit_code.value.code == 1
    assert "HTTP 404" in capsys.readouterr().err
