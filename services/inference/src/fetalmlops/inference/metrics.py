"""The inference service's Prometheus metrics (beside KServe's own per-stage histograms).

Labels name the model and its version, never a request: per-version latency is what an SRE
compares across a promotion. During a rollout the arm (`arms.Arm`) tells the challenger's
answers and its shadow scorings from the champion's.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram(
    "fetalmlops_inference_request_seconds",
    "Time from a request's decoding to its answer, model run and batching wait included "
    "(verb shadow: to the challenger's shadow scores).",
    ["model", "model_version", "verb"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "fetalmlops_inference_predictions_total",
    "Images classified, by predicted plane and arm (champion, challenger, shadow).",
    ["model", "model_version", "plane", "arm"],
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
CHALLENGER_VERSION = Gauge(
    "fetalmlops_inference_challenger_version",
    "The challenger served beside the champion (0: none).",
    ["model"],
)
ROLLOUTS = Counter(
    "fetalmlops_inference_rollouts_total",
    "Rollout states acted on, by outcome (applied, skipped, failed).",
    ["outcome"],
)
SHADOW_RUNS = Counter(
    "fetalmlops_inference_shadow_runs_total",
    "Shadow scorings of a request by the challenger, by outcome (scored, failed, skipped: too "
    "many in flight).",
    ["model", "model_version", "outcome"],
)
CANARY_FALLBACKS = Counter(
    "fetalmlops_inference_canary_fallbacks_total",
    "Canary requests the challenger failed and the champion answered.",
    ["model", "model_version"],
)
