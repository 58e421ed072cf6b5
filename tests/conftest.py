"""Fixtures for cross-service tests against the REAL local stack.

The stack (Kafka in KRaft mode, MinIO, PostgreSQL) is started by `make stack-up`; these tests
never start stand-ins in its place. When the stack is down they fail with the command to run,
so a green run always means the real servers were exercised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fetalmlops.common.settings import Settings


@pytest.fixture(scope="session")
def stack_settings() -> Callable[[str | None], Settings]:
    """``stack_settings("ingest")``: Settings for the real stack, with ingest's credentials."""
    from fetalmlops.stack import stack

    down = [c.name for c in stack.status() if not c.running]
    if down:
        pytest.fail(f"the local stack is not running ({', '.join(down)} down): run `make stack-up`")

    def settings_for(service: str | None = None) -> Settings:
        return Settings(**stack.settings_values(service))

    return settings_for


@pytest.fixture(scope="session")
def _span_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    # A test that ran a service in process may have installed the global provider already, and
    # OpenTelemetry refuses to replace it: record its spans instead.
    current = trace.get_tracer_provider()
    provider = current if isinstance(current, TracerProvider) else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if provider is not current:
        trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans(_span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test, recorded by the process-wide tracer provider."""
    _span_exporter.clear()
    yield _span_exporter
    _span_exporter.clear()
