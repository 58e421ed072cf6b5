"""One trace from an HTTP request, through a Kafka hop, into the consumer (DESIGN.md §5)."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fetalmlops.common.bus import Consumer, EmbeddedBus, consume, publish_event
from fetalmlops.common.service import create_app
from fetalmlops.v1 import images_pb2

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
# Keys may be study UIDs, which PS3.15 treats as identifying: the plumbing never records them.
STUDY_UID = "1.2.840.113619.2.55.3.2831164356"


def test_http_request_and_kafka_hop_share_the_callers_trace(spans: InMemorySpanExporter) -> None:
    bus = EmbeddedBus(partitions=1)
    app = create_app("trace test", {})

    @app.post("/studies")
    def upload() -> dict[str, str]:
        publish_event(bus, "t", STUDY_UID, images_pb2.ImageReceived(sha256="ab"), "test")
        return {"status": "accepted"}

    response = TestClient(app).post(
        "/studies", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    assert response.status_code == 200

    stop = threading.Event()
    consume(bus, Consumer(["t"], "g", lambda record: stop.set(), "dlq"), stop)

    finished = spans.get_finished_spans()
    server = next(s for s in finished if s.name == "POST /studies")
    process = next(s for s in finished if s.name == "t process")
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert {format(s.context.trace_id, "032x") for s in (server, process)} == {CALLER_TRACE}
    recorded = [str(v) for s in finished for v in (s.attributes or {}).values()]
    assert not any(STUDY_UID in value for value in recorded)


def test_health_endpoints_make_no_spans(spans: InMemorySpanExporter) -> None:
    client = TestClient(create_app("quiet", {}))
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert spans.get_finished_spans() == ()
