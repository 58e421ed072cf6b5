"""Who watches the windows: each of the monitor's tests, the monitor's own verdict, and Evidently.

Every contender sees the same windows and answers, window by window, whether an alarm starts.

* Each registered test (`fetalmlops.monitor.drift.DETECTORS`) with a CUSUM alarm calibrated on
  its own no-shift p-values, as `verdicts.alarm_rule` calibrates the monitor's, to the same
  budget of false alarm episodes per 10,000 predictions.
* ``monitor``: what the service runs, the Bonferroni-combined verdict of all six tests and its
  calibrated alarm (`verdicts.alarm_rule`, `verdicts.evidence`, `drift.alarm.step`).
* Evidently 0.7, as its documentation sets it up: the ``DataDriftPreset`` on the five image
  statistics (each column's default test, dataset drift when at least half the columns drift)
  and ``EmbeddingsDriftMetric`` with its default method for this reference size, the domain
  classifier (``model``) whose ROC AUC is compared with the 95th percentile of random AUCs.
  Evidently has no alarm rule: a flagged window after an unflagged one starts an alarm episode,
  which is the most lenient reading (a run of flagged windows counts once, as ours do).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fetalmlops.monitor.drift import DETECTORS, Detector
from fetalmlops.monitor.drift.alarm import AlarmRule, AlarmState, calibrate, null_p_values, step
from fetalmlops.monitor.drift.base import Outcome, Reference, Window
from fetalmlops.monitor.verdicts import alarm_rule, evidence, verdict

os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry, off

# A window's answers: did an alarm episode start with it.
Answers = list[bool]


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "ours" or "evidently"
    answers: Callable[[Sequence[Window]], Answers]  # one stream's windows, in order


def ours(
    reference: Reference, window_size: int, calibration_windows: int, false_alarms_per_10k: float
) -> list[Contender]:
    budget = false_alarms_per_10k * window_size / 10_000

    def alarmed(
        rule: AlarmRule, outcome: Callable[[Window], Outcome]
    ) -> Callable[[Sequence[Window]], Answers]:
        def answers(windows: Sequence[Window]) -> Answers:
            state, fired = AlarmState(), []
            for window in windows:
                state, started = step(rule, state, outcome(window))
                fired.append(started)
            return fired

        return answers

    contenders = []
    for name, detector in DETECTORS.items():
        null_p = null_p_values(reference, detector, window_size, calibration_windows)
        rule = calibrate(null_p, budget)
        contenders.append(Contender(name, "ours", alarmed(rule, _bound(detector, reference))))
    rule = alarm_rule(reference, window_size, calibration_windows, false_alarms_per_10k)
    contenders.append(
        Contender(
            "monitor", "ours", alarmed(rule, lambda window: evidence(verdict(reference, window)))
        )
    )
    return contenders


def _bound(detector: Detector, reference: Reference) -> Callable[[Window], Outcome]:
    return lambda window: detector(reference, window)


def evidently(reference: Reference, pool: Executor) -> list[Contender]:
    """Evidently's two methods, scoring windows in `pool` (Evidently takes about a second a
    window)."""

    def episodes(
        score: Callable[[Reference, Window], bool],
    ) -> Callable[[Sequence[Window]], Answers]:
        def answers(windows: Sequence[Window]) -> Answers:
            flagged = list(pool.map(score, [reference] * len(windows), windows))
            before = [False, *flagged[:-1]]
            return [now and not was for was, now in zip(before, flagged, strict=True)]

        return answers

    return [
        Contender("data-drift preset", "evidently", episodes(preset_drift)),
        Contender("embeddings model", "evidently", episodes(embedding_drift)),
    ]


def preset_drift(reference: Reference, window: Window) -> bool:
    """DataDriftPreset on the image statistics: is the dataset drifted."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(columns=columns)]).run(
            current_data=pd.DataFrame(window.image_stats, columns=columns),
            reference_data=pd.DataFrame(reference.image_stats, columns=columns),
        )
    (drifted,) = [
        metric["value"]
        for metric in snapshot.dict()["metrics"]
        if metric["metric_name"].startswith("DriftedColumnsCount")
    ]
    return bool(drifted["share"] >= 0.5)  # the preset's drift_share


def embedding_drift(reference: Reference, window: Window) -> bool:
    """EmbeddingsDriftMetric with its default method: drift detected or not."""
    from evidently.legacy.metrics import EmbeddingsDriftMetric
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    columns = [f"e{i}" for i in range(reference.embeddings.shape[1])]
    report = Report(metrics=[EmbeddingsDriftMetric("embedding")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.run(
            reference_data=pd.DataFrame(reference.embeddings, columns=columns),
            current_data=pd.DataFrame(window.embeddings, columns=columns),
            column_mapping=ColumnMapping(embeddings={"embedding": columns}, numerical_features=[]),
        )
    (result,) = report.as_dict()["metrics"]
    return bool(result["result"]["drift_detected"])


def first_alarm(answers: Answers) -> int | None:
    """The index of the first window an alarm started with, or None."""
    return next((i for i, fired in enumerate(answers) if fired), None)


def alarms(answers: Answers) -> int:
    return int(np.sum(answers))
