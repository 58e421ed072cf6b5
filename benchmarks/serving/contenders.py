"""The contenders' sessions: one way per contender for a thread to send a PNG and get planes.

(a) and (a') call the archive's TorchScript in this process; (b) is our predictor through
`PlaneClient`; (c) is TorchServe, the PNG POSTed to `/predictions/<model>`. Each session opens
its own connection, so that threads never share one.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch

from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.inference.client import PlaneClient
from serving.workload import CLASSES, NAME, probabilities

CONTENDERS = {
    "(a)": "TorchScript forward, in process",
    "(a')": "decode + forward, in process",
    "(b)": "our predictor, V1 :predict",
    "(c)": "TorchServe 0.12, /predictions",
}
# Answers over HTTP are JSON floats of the same float32 softmax: equal to well below this.
SAME_PROBABILITY = 1e-4

Call = Callable[[bytes], dict[str, float]]  # a PNG in, every plane's probability out
# One thread's way of calling a contender: its own connection, opened and closed around its run.
Session = Callable[[], AbstractContextManager[Call]]


def forward_only(model: torch.jit.ScriptModule, tensors: dict[bytes, torch.Tensor]) -> Call:
    return lambda png: probabilities(model, tensors[png])


def decode_and_forward(model: torch.jit.ScriptModule, prep: Preprocessing) -> Call:
    return lambda png: probabilities(model, decode(png, prep).unsqueeze(0))


def shared(call: Call) -> Session:
    """In process, every thread calls the same module: TorchScript runs concurrent calls."""
    return lambda: nullcontext(call)


def our_predictor(url: str) -> Session:
    @contextmanager
    def session() -> Iterator[Call]:
        with PlaneClient(url, NAME, timeout=120) as client:
            yield lambda png: client.predict([png])[0].probabilities

    return session


def torchserve_predictions(url: str) -> Session:
    host, port = url.removeprefix("http://").rsplit(":", 1)

    @contextmanager
    def session() -> Iterator[Call]:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)

        def call(png: bytes) -> dict[str, float]:
            headers = {"Content-Type": "image/png"}
            connection.request("POST", f"/predictions/{NAME}", body=png, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != http.client.OK:
                raise RuntimeError(f"TorchServe answered {response.status}: {body[:300]!r}")
            answer: dict[str, Any] = json.loads(body)
            return {str(k): float(v) for k, v in answer["probabilities"].items()}

        try:
            yield call
        finally:
            connection.close()

    return session


def check_agrees(name: str, session: Session, reference: Call, images: Sequence[bytes]) -> None:
    """A contender that answered differently would not be serving the same model."""
    with session() as call:
        for png in images:
            got, want = call(png), reference(png)
            worst = max(abs(got[c] - want[c]) for c in CLASSES)
            if worst > SAME_PROBABILITY:
                raise RuntimeError(f"{name} differs from the in-process model by {worst:.2g}")
