"""The inference service's Prometheus metrics (beside KServe's own per-stage histograms).

Labels name the model and its version, never a request: per-version latency is what an SRE
compares across a promotion.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "fetalmlops_inference_request_seconds",
    "Time from a request's decoding to its answer, model run and batching wait included.",
    ["model", "model_version", "verb"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "fetalmlops_inference_predictions_total",
    "Images classified, by predicted plane.",
    ["model", "model_version", "plane"],
)
BATCH_IMAGES = Histogram(
    "fetalmlops_inference_batch_images",
    "Images per model run after micro-batching.",
    ["model", "model_version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
SERVED_VERSION = Gauge(
    "fetalmlops_inference_served_version", "The model version being served.", ["model"]
)
RELOADS = Counter(
    "fetalmlops_inference_reloads_total",
    "Promotions acted on, by outcome (switched, skipped, failed).",
    ["outcome"],
)
EVENTS_DROPPED = Counter(
    "fetalmlops_inference_events_dropped_total",
    "Prediction events not published, by reason (queue_full, publish_failed).",
    ["reason"],
)
