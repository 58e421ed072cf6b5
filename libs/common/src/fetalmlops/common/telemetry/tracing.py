"""OpenTelemetry tracing and W3C trace-context propagation over Kafka headers and HTTP."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from fetalmlops.common.settings import Settings

Headers = Sequence[tuple[str, bytes]]


def configure_tracing(settings: Settings) -> trace.TracerProvider:
    """Install the process-wide tracer provider once; export over OTLP/HTTP when configured.

    OpenTelemetry refuses to replace a global provider, so a second call (tests, the embedded
    all-in-one process) keeps the first one.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(context: Context | None = None) -> list[tuple[str, bytes]]:
    """The current (or given) trace context as Kafka headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(name, value.encode()) for name, value in carrier.items()]


def extract(headers: Headers) -> Context:
    """The trace context carried by Kafka headers; an empty context when there is none."""
    carrier = {name: value.decode(errors="replace") for name, value in headers}
    return propagate.extract(carrier)
