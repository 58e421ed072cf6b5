"""Every error reaching an answer is answered without a byte of the request, and logged so.

A FastAPI app with the server's refusals raises what KServe, FastAPI and libraries raise, each
error's message holding a planted value; the answers and the log records (as the service's
JSON formatter writes them) must not.
"""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from pydantic import BaseModel

from fetalmlops.common.telemetry.logs import JsonFormatter
from fetalmlops.inference import refusals
from fetalmlops.inference.refusals import NotServed, Refused, TooLarge

CANARY = "CANARY-Doe^Jane-4711"


class Body(BaseModel):
    count: int


def app_under_test() -> FastAPI:
    app = FastAPI()
    refusals.install(app, lambda: ["fetal-planes"])
    app.add_middleware(refusals.Contained)
    raised: dict[str, Exception] = {
        "refused": Refused("input 0: the shape is not a list of sizes"),
        "large": TooLarge("the image is over the limit of 8192 pixels a side"),
        "version": NotServed("this model serves version 7 only"),
        "kserve": InvalidInput(f"unknown input '{CANARY}'"),
        "unknown": ModelNotFound(CANARY),
        "unready": ModelNotReady(CANARY),
        "inference": InferenceError(f'Failed to encode "{CANARY}"'),
        "library": UnicodeDecodeError("utf-8", CANARY.encode(), 0, 1, "invalid start byte"),
    }

    @app.get("/raise/{kind}")
    def fail(kind: str) -> None:
        raise raised[kind]

    @app.post("/body")
    def body(value: Body) -> dict[str, int]:
        return {"count": value.count}

    return app


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("refused", 400, "input 0: the shape is not a list of sizes"),
        ("large", 413, "the image is over the limit of 8192 pixels a side"),
        ("version", 404, "this model serves version 7 only"),
        ("kserve", 400, refusals.MALFORMED),
        ("unknown", 404, "no model of that name is served here (this server serves: fetal-planes)"),
        ("unready", 503, "the model is not loaded yet"),
        ("inference", 500, refusals.INTERNAL),
        ("library", 500, refusals.INTERNAL),
    ],
)
def test_each_error_is_answered_by_its_kind(
    kind: str, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(app_under_test(), raise_server_exceptions=False) as client:
        response = client.get(f"/raise/{kind}")
    assert (response.status_code, response.json()) == (status, {"error": reason})
    formatter = JsonFormatter("inference")
    logged = [formatter.format(record) for record in caplog.records]
    assert [line for line in logged if "CANARY" in line] == []
    if status == 500:  # logged, by the type of the error
        assert any("request failed" in line for line in logged)
    else:  # a refusal, or a state (a model awaiting its first version): no error line each
        assert all(record.levelno < logging.ERROR for record in caplog.records)


def test_a_body_that_does_not_validate_is_400_without_its_values() -> None:
    with TestClient(app_under_test()) as client:
        invalid = client.post("/body", json={"count": CANARY})
        not_json = client.post("/body", content=b"{" + CANARY.encode(), headers=JSON)
        binary = client.post(
            "/body",
            content=b"{" + CANARY.encode(),
            headers=JSON | {"Inference-Header-Content-Length": "3"},
        )
    assert invalid.status_code == 400
    assert invalid.json()["error"].startswith("the request does not follow the protocol: body.")
    assert not_json.json() == {"error": "the body is not JSON"}
    assert "send it as application/octet-stream" in binary.json()["error"]
    assert [r.text for r in (invalid, not_json, binary) if "CANARY" in r.text] == []


JSON = {"Content-Type": "application/json"}
