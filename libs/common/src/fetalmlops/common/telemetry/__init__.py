"""Telemetry for SREs: OpenTelemetry traces, Prometheus metrics and structured JSON logs."""

from fetalmlops.common.telemetry.logs import configure_logging
from fetalmlops.common.telemetry.tracing import configure_tracing, extract, inject, tracer

__all__ = ["configure_logging", "configure_tracing", "extract", "inject", "tracer"]
