import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from fetalmlops.common.telemetry.logs import JsonFormatter


def test_json_log_line_carries_service_trace_ids_and_extra_fields() -> None:
    formatter = JsonFormatter("ingest")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        record = logging.makeLogRecord(
            {
                "name": "x",
                "levelname": "INFO",
                "msg": "stored %s",
                "args": ("image",),
                "sha256": "ab",
            }
        )
        line = json.loads(formatter.format(record))
    assert line["service"] == "ingest" and line["message"] == "stored image"
    assert line["sha256"] == "ab"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
