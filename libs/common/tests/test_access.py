"""The shell's HTTP edges never repeat the request: access logs, spans, refusals, tracebacks.

Each test sends a planted value through the channel a real client would use (query string,
path, Host and User-Agent headers, form and JSON fields) and searches every place it could
come back: the response, every log record as the JSON formatter writes it, every span
attribute.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Form
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from fetalmlops.common.bus.consume import Rejected, deadletter_reason
from fetalmlops.common.refusals import described
from fetalmlops.common.service import create_app
from fetalmlops.common.telemetry.logs import JsonFormatter

CANARY = "Doe^Jane-MRN4711"


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plane: int
    tags: dict[str, int] = {}


def app_under_test() -> FastAPI:
    app = create_app("test", {})

    @app.get("/studies/{study}")
    def study(study: str) -> dict[str, str]:
        return {"study": "found"}

    @app.post("/upload")
    def upload(cohort: str = Form(..., pattern=r"^[a-z]*$")) -> dict[str, str]:
        return {"cohort": "ok"}

    @app.post("/labels")
    def labels(label: Label) -> dict[str, str]:
        return {"label": "ok"}

    @app.get("/boom")
    def boom(value: str = "") -> None:
        # A library failing on the input quotes it, as UnicodeDecodeError quotes bytes.
        raise ValueError(f"cannot parse {value!r}")

    return app


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.formatter_ = JsonFormatter("test")

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("httpx"):  # the test's own client, not the server
            self.lines.append(self.formatter_.format(record))


@pytest.fixture
def observed() -> Iterator[tuple[TestClient, Records, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    previous = root.level
    root.setLevel(logging.DEBUG)
    app = app_under_test()
    # The app is instrumented again with a provider of the test's own, to read its spans.
    FastAPIInstrumentor.uninstrument_app(app)
    from fetalmlops.common.telemetry.access import scrub_request_span

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, server_request_hook=scrub_request_span
    )
    app.middleware_stack = None  # uninstrument_app built it; build it again, instrumented
    try:
        yield TestClient(app, raise_server_exceptions=False), records, exporter
    finally:
        root.removeHandler(records)
        root.setLevel(previous)


def leaks(
    response_text: str, records: Records, exporter: InMemorySpanExporter, needle: str = CANARY
) -> list[str]:
    found = [f"response: {response_text[:200]}"] if needle in response_text else []
    found += [f"log: {line[:300]}" for line in records.lines if needle in line]
    for span in exporter.get_finished_spans():
        text = json.dumps({"name": span.name, **dict(span.attributes or {})}, default=str)
        if needle in text:
            found.append(f"span: {text[:300]}")
    return found


def access_lines(records: Records) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in records.lines]
    return [line for line in lines if line["logger"] == "fetalmlops.access"]


def test_the_access_log_names_the_route_and_status_never_the_url(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, records, exporter = observed
    response = client.get(
        f"/studies/{CANARY}",
        params={"PatientName": CANARY, "PatientID": CANARY},
        headers={"User-Agent": CANARY, "Host": f"{CANARY.lower()}.example"},
    )
    assert response.status_code == 200
    assert leaks(response.text, records, exporter) == []
    (line,) = access_lines(records)
    assert (line["method"], line["route"], line["status"]) == ("GET", "/studies/{study}", 200)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET /studies/{study}"]
    assert span.attributes is not None and span.attributes["http.target"] == "/studies/{study}"


def test_every_answer_is_counted_by_route_template_and_status(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, _, _ = observed

    def answered(route: str, status: str) -> float:
        value = REGISTRY.get_sample_value(
            "fetalmlops_http_responses_total",
            {"method": "GET", "route": route, "status": status},
        )
        return value or 0.0

    before = answered("/studies/{study}", "200"), answered("unmatched", "404")
    assert client.get(f"/studies/{CANARY}").status_code == 200
    assert client.get(f"/{CANARY}/nowhere").status_code == 404
    after = answered("/studies/{study}", "200"), answered("unmatched", "404")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)
    families = [m for m in REGISTRY.collect() if m.name == "fetalmlops_http_responses"]
    assert not any(CANARY in str(sample.labels) for f in families for sample in f.samples)


def test_unmatched_and_odd_requests_are_logged_without_their_target(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, records, exporter = observed
    assert client.get(f"/nowhere/{CANARY}?q={CANARY}").status_code == 404
    assert client.post(f"/studies/{CANARY}").status_code == 405
    assert client.request(CANARY.upper().replace("^", ""), "/upload").status_code == 405
    assert leaks("", records, exporter) == []
    assert leaks("", records, exporter, CANARY.upper().replace("^", "")) == []
    routes = [(line["method"], line["route"], line["status"]) for line in access_lines(records)]
    assert routes == [
        ("GET", "unmatched", 404),
        ("POST", "/studies/{study}", 405),
        ("OTHER", "/upload", 405),
    ]


def test_probes_are_not_access_logged_unless_they_fail(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, records, _ = observed
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert access_lines(records) == []


def test_validation_errors_say_where_and_what_but_not_the_value(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, records, exporter = observed
    form = client.post("/upload", data={"cohort": CANARY})
    extra = client.post("/labels", json={"plane": 1, CANARY: 1})
    wrong = client.post("/labels", json={"plane": CANARY, "tags": {CANARY: CANARY}})
    broken = client.post(
        "/labels", content=f'{{"plane": "{CANARY}', headers={"Content-Type": "application/json"}
    )
    for response in (form, extra, wrong, broken):
        assert response.status_code == 422
        assert leaks(response.text, records, exporter) == [], response.text
    assert form.json()["detail"] == [
        {
            "loc": ["body", "cohort"],
            "type": "string_pattern_mismatch",
            "msg": "String should match pattern '^[a-z]*$'",
        }
    ]
    assert extra.json()["detail"][0]["loc"] == ["body", "<key>"]
    assert {e["type"] for e in wrong.json()["detail"]} == {"int_parsing"}


def test_a_failure_is_a_json_500_and_its_traceback_keeps_only_the_type(
    observed: tuple[TestClient, Records, InMemorySpanExporter],
) -> None:
    client, records, exporter = observed
    response = client.get("/boom", params={"value": CANARY})
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    assert leaks(response.text, records, exporter) == []


def test_a_logged_traceback_names_each_exception_by_its_type_alone() -> None:
    try:
        try:
            CANARY.encode().decode("ascii", errors="strict").encode("cp037")
            b"\xff".decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"cannot read {CANARY}") from exc
    except ValueError:
        record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    line = json.loads(JsonFormatter("test").format(record))
    assert CANARY not in line["exception"]
    assert "UnicodeDecodeError" in line["exception"] and line["exception"].endswith("ValueError")
    assert "in test_a_logged_traceback_names_each_exception_by_its_type_alone" in line["exception"]


def test_messages_quoting_input_are_replaced() -> None:
    quoting = {"type": "value_error", "loc": ("body", "x"), "msg": f"bad {CANARY}"}
    quoting["ctx"] = {"error": f"bad {CANARY}"}
    expected = {"loc": ["body", "x"], "type": "value_error", "msg": "invalid value"}
    assert described(quoting) == expected
    keyed = {"type": "int_parsing", "loc": ("body", "tags", "Doe Jane"), "msg": "Input should be"}
    assert described(keyed)["loc"] == ["body", "tags", "<key>"]


def test_dead_letter_reasons_keep_our_messages_and_only_the_type_of_a_librarys() -> None:
    assert deadletter_reason(Rejected("no pixel data")) == "Rejected: no pixel data"
    library = UnicodeDecodeError("utf-8", CANARY.encode(), 0, 1, "invalid start byte")
    reason = deadletter_reason(library)
    assert reason.startswith("UnicodeDecodeError") and CANARY not in reason
