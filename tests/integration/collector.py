"""A minimal OTLP/HTTP trace collector on loopback: what an SRE's collector would receive.

Services export spans with their real OTLP exporter (`FETALMLOPS_OTLP_ENDPOINT`); this server
decodes each ExportTraceServiceRequest and keeps every span's name, attributes and events as
text, so tests can search exactly what left the process.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Exported:
    """One span as exported: its trace, kind and name, and its resource's attributes."""

    trace_id: str  # 32 hex digits
    kind: int  # OTLP's Span.SpanKind
    name: str
    resource: dict[str, str]


@dataclass
class Collected:
    spans: list[tuple[str, str]] = field(default_factory=list)  # (service, span as text)
    exported: list[Exported] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def traces(self) -> dict[str, list[Exported]]:
        """Every span by its trace id."""
        with self.lock:
            spans = list(self.exported)
        by_trace: dict[str, list[Exported]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span)
        return by_trace

    def names(self) -> set[str]:
        with self.lock:
            return {text.split("\n", 1)[0] for _, text in self.spans}

    def texts(self) -> list[str]:
        with self.lock:
            return [text for _, text in self.spans]


def _accept(request: ExportTraceServiceRequest, into: Collected) -> None:
    for resource in request.resource_spans:
        attributes = {a.key: a.value.string_value for a in resource.resource.attributes}
        service = attributes.get("service.name", "")
        for scope in resource.scope_spans:
            for span in scope.spans:
                # The span's name first, then every attribute and event exactly as exported.
                text = "\n".join([span.name, str(span.attributes), str(span.events)])
                exported = Exported(span.trace_id.hex(), span.kind, span.name, attributes)
                with into.lock:
                    into.spans.append((service, text))
                    into.exported.append(exported)


@contextmanager
def otlp_collector(host: str = "127.0.0.1") -> Iterator[tuple[str, Collected]]:
    """Yields the endpoint (`http://<host>:<port>/v1/traces`) and what it has collected."""
    collected = Collected()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            _accept(ExportTraceServiceRequest.FromString(body), collected)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/v1/traces", collected
    finally:
        server.shutdown()
        server.server_close()
