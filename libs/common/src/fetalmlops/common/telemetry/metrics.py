"""Prometheus metrics of the shared plumbing. Labels never carry keys, ids or PHI."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "fetalmlops_messages_total",
    "Messages handled by consumers, by outcome (processed, retried, deadlettered).",
    ["topic", "group", "outcome"],
)
HANDLING_SECONDS = Histogram(
    "fetalmlops_message_handling_seconds",
    "Time a consumer's handler took for one message, retries included.",
    ["topic", "group"],
)
PUBLISHED = Counter("fetalmlops_events_published_total", "Events published, by topic.", ["topic"])
HTTP_RESPONSES = Counter(
    "fetalmlops_http_responses_total",
    "HTTP answers, by method, route template (never the URL) and status code.",
    ["method", "route", "status"],
)
