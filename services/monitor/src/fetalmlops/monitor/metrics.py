"""The monitor's Prometheus metrics: base units, 0–1 ratios, labels bounded by the fleet (model
versions and scanner models), never by requests or patients."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge

from fetalmlops.common.db import DriftWindow
from fetalmlops.monitor.drift.base import Outcome

STREAM = ("model", "model_version", "segment")

PREDICTIONS = Counter(
    "fetalmlops_monitor_predictions", "Prediction events kept", ["model", "model_version"]
)
FEEDBACK = Counter("fetalmlops_monitor_feedback", "Feedback events kept (true planes)")
WINDOWS = Counter("fetalmlops_drift_windows", "Drift windows closed", STREAM)
DRIFT_STATISTIC = Gauge(
    "fetalmlops_drift_statistic",
    "Each drift test's statistic in the last window",
    ["test", *STREAM],
)
DRIFT_P_VALUE = Gauge(
    "fetalmlops_drift_p_value", "Each drift test's p-value in the last window", ["test", *STREAM]
)
EVIDENCE = Gauge(
    "fetalmlops_drift_cusum",
    "The alarm's CUSUM statistic after the last window (fires at fetalmlops_drift_threshold)",
    STREAM,
)
ALARM = Gauge("fetalmlops_drift_alarm", "1 while an alarm episode lasts, else 0", STREAM)
ALARMS = Counter("fetalmlops_drift_alarms", "Alarm episodes started", STREAM)
ESTIMATED_ACCURACY = Gauge(
    "fetalmlops_estimated_accuracy_ratio",
    "Label-free (CBPE) expected accuracy of the last window",
    STREAM,
)
FEEDBACK_MACRO_F1 = Gauge(
    "fetalmlops_feedback_macro_f1_ratio",
    "Macro-F1 measured on the predictions clinicians gave feedback on",
    ["model", "model_version"],
)


def observe_window(window: DriftWindow, outcomes: Mapping[str, Outcome]) -> None:
    stream = (window.model_name, str(window.model_version), window.segment)
    WINDOWS.labels(*stream).inc()
    for test, outcome in outcomes.items():
        if outcome.statistic == outcome.statistic:  # undecided tests have no statistic
            DRIFT_STATISTIC.labels(test, *stream).set(outcome.statistic)
            DRIFT_P_VALUE.labels(test, *stream).set(outcome.p_value)
    EVIDENCE.labels(*stream).set(window.cusum)
    ALARM.labels(*stream).set(1.0 if window.alarm_active else 0.0)
    if window.estimate is not None:
        ESTIMATED_ACCURACY.labels(*stream).set(window.estimate["accuracy"]["value"])
