"""A small client of the inference service's V1 and V2 protocols, standard library only.

Scripts, notebooks and benchmarks talk to a served model version through ``PlaneClient``
without pulling in kserve, torch or an HTTP library::

    client = PlaneClient("http://127.0.0.1:8080", "fetal-planes")
    [prediction] = client.predict([png_bytes])
    prediction.label, prediction.probabilities["fetal_brain"]

A client keeps one keep-alive HTTP connection, so it belongs to one thread at a time: give each
thread its own client (a connection per thread is also what lets the server work on several
requests at once). Every answer other than 2xx is raised as ``InferenceError`` with the status
and the server's own ``error`` text; a server that cannot be reached raises ``OSError``.

    python -m fetalmlops.inference.client http://127.0.0.1:8080 fetal-planes a.png b.png
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

# Both protocols' names, as the server's fetalmlops.inference.protocol defines them; repeated
# here because a client must not import the server (it brings kserve and torch).
IMAGE_INPUT = "image"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
# What a reused keep-alive connection raises when the server closed it while idle (KServe's
# uvicorn after 65 s, a proxy in between sooner): the request was not answered, so it is sent
# once more on a new connection. Resending is safe: a prediction changes nothing on the server.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class InferenceError(Exception):
    """The server refused or failed a request: its HTTP status and its reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the most probable plane and every plane's probability."""

    label: str
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    arm: str = ""  # "champion" or "challenger" (a canary); "" from a server before rollouts


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode("ascii")


def v1_body(images: Sequence[bytes]) -> dict[str, Any]:
    return {"instances": [{"b64": b64(image)} for image in images]}


def v2_body(images: Sequence[bytes]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": IMAGE_INPUT,
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [b64(image) for image in images],
            }
        ]
    }


def v1_predictions(answer: Mapping[str, Any]) -> list[Prediction]:
    return [
        Prediction(
            label=str(p["label"]),
            probabilities={str(k): float(v) for k, v in p["probabilities"].items()},
            model_name=str(p["model_name"]),
            model_version=str(p["model_version"]),
            arm=str(p.get("arm", "")),
        )
        for p in answer["predictions"]
    ]


def v2_predictions(answer: Mapping[str, Any]) -> list[Prediction]:
    """The ``probabilities`` output (row-major, its class order in the ``classes`` parameter)
    and the ``label`` output, one row and one label per image."""
    outputs = {output["name"]: output for output in answer["outputs"]}
    probabilities, labels = outputs[PROBABILITIES_OUTPUT], outputs[LABEL_OUTPUT]
    classes = json.loads(probabilities["parameters"]["classes"])
    values = [float(v) for v in probabilities["data"]]
    width = len(classes)
    return [
        Prediction(
            label=str(label),
            probabilities=dict(zip(classes, values[i * width : (i + 1) * width], strict=True)),
            model_name=str(answer["model_name"]),
            model_version=str(answer.get("model_version") or ""),
            arm=str((answer.get("parameters") or {}).get("arm", "")),
        )
        for i, label in enumerate(labels["data"])
    ]


def error_reason(body: bytes, fallback: str) -> str:
    """KServe answers errors as ``{"error": "..."}``; a proxy in between may answer anything."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body.decode("utf-8", "replace").strip() or fallback
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])
    if isinstance(parsed, dict) and "detail" in parsed:  # FastAPI's own 404/405/422 bodies
        return str(parsed["detail"])
    return fallback


class PlaneClient:
    """One served model, over one keep-alive connection (one client per thread)."""

    def __init__(self, url: str, model: str, token: str | None = None, timeout: float = 30) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        self.model = model
        self.timeout = timeout
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")  # a server behind a path-routing ingress
        self._headers = {"Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connection: http.client.HTTPConnection | None = None
        self._name = quote(model, safe="")

    def predict(self, images: Sequence[bytes]) -> list[Prediction]:
        """V1 ``:predict``: one prediction per PNG or JPEG image, in order."""
        answer = self._call("POST", f"/v1/models/{self._name}:predict", v1_body(images))
        return v1_predictions(answer)

    def infer(self, images: Sequence[bytes]) -> list[Prediction]:
        """V2 ``/infer`` with the ``image`` input: the same predictions as ``predict``."""
        answer = self._call("POST", f"/v2/models/{self._name}/infer", v2_body(images))
        return v2_predictions(answer)

    def explain(
        self, image: bytes, method: str = "gradcam", target: str | None = None
    ) -> dict[str, Any]:
        """V1 ``:explain`` of one image (``gradcam`` or ``shap``) for ``target``, a class name
        (default: the predicted one): the image's explanation as the server sent it (label,
        probabilities, heatmap, heatmap_png, ...)."""
        parameters = {"method": method} | ({} if target is None else {"target": target})
        body = v1_body([image]) | {"parameters": parameters}
        answer = self._call("POST", f"/v1/models/{self._name}:explain", body)
        explanation: dict[str, Any] = answer["explanations"][0]
        return explanation

    def ready(self) -> bool:
        """Whether the model is loaded and answering (False while the server loads it)."""
        try:
            answer = self._call("GET", f"/v2/models/{self._name}/ready")
        except InferenceError as error:
            if error.status == http.client.SERVICE_UNAVAILABLE:
                return False
            raise
        return bool(answer.get("ready"))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> PlaneClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        return kind(self._host, self._port, timeout=self.timeout)

    def _call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        status, reason, content = self._exchange(method, self._prefix + path, payload, headers)
        if not 200 <= status < 300:
            raise InferenceError(status, error_reason(content, reason))
        answer = json.loads(content)
        if not isinstance(answer, dict):
            raise InferenceError(status, f"expected a JSON object, got {type(answer).__name__}")
        return answer

    def _exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        reused = self._connection is not None
        try:
            return self._send(method, path, payload, headers)
        except STALE_CONNECTION:
            if not reused:
                raise
            return self._send(method, path, payload, headers)

    def _send(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        if self._connection is None:
            self._connection = self._connect()
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            content = response.read()
        except BaseException:
            # Whatever interrupted the exchange (a timeout, a reset, Ctrl-C) left the
            # connection in an unknown state: never reuse it.
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response.reason, content


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Predict the standard plane of image files.")
    parser.add_argument("url", help="the inference service, e.g. http://127.0.0.1:8080")
    parser.add_argument("model", help="the served model's name, e.g. fetal-planes")
    parser.add_argument("files", nargs="+", type=Path, help="PNG or JPEG images")
    parser.add_argument("--token", help="bearer token, where the server asks for one")
    args = parser.parse_args(argv)
    with PlaneClient(args.url, args.model, args.token) as client:
        try:
            predictions = client.predict([path.read_bytes() for path in args.files])
        except InferenceError as error:
            parser.exit(1, f"{error}\n")
    for path, prediction in zip(args.files, predictions, strict=True):
        confidence = prediction.probabilities[prediction.label]
        print(
            f"{path}\t{prediction.label}\t{confidence:.3f}\t"
            f"{prediction.model_name} v{prediction.model_version}"
        )


if __name__ == "__main__":
    main()
