"""What the monitor reports, read from its own rows: drift per stream, performance from
feedback beside the label-free estimate on the same predictions, alarms, and carbon.

One function per report, each a plain JSON document; the API, the dashboard and
`fetalmlops monitor report` all show these, so the three never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from fetalmlops.common.db import (
    DriftWindow,
    EnergyAccount,
    Feedback,
    MonitoredVersion,
    ObservedPrediction,
    RetrainingRequest,
)
from fetalmlops.common.planes import Plane
from fetalmlops.metrics.classification import ECE_BINS
from fetalmlops.metrics.classification import reliability as diagram
from fetalmlops.monitor.carbon import InferenceAccount, per_thousand_inferences, per_training_run
from fetalmlops.monitor.estimate import estimated, gap
from fetalmlops.monitor.performance import measured

BOOTSTRAP = 500
NOT_MEASURED = "no energy account from the inference service yet"


def drift(session: Session, since: datetime | None = None) -> list[dict[str, Any]]:
    """Each stream (model version x scanner segment) with its windows, oldest first."""
    query = select(DriftWindow).order_by(
        DriftWindow.model_name, DriftWindow.model_version, DriftWindow.segment, DriftWindow.number
    )
    if since is not None:
        query = query.where(DriftWindow.last_at >= since)
    thresholds = {
        (v.model_name, v.version): (v.alarm_rule or {}).get("threshold")
        for v in session.scalars(select(MonitoredVersion))
    }
    realised = realised_by_window(session)
    streams: dict[tuple[str, int, str], dict[str, Any]] = {}
    for window in session.scalars(query):
        key = (window.model_name, window.model_version, window.segment)
        stream = streams.setdefault(
            key,
            {"model": key[0], "model_version": key[1], "segment": key[2],
             "threshold": thresholds.get(key[:2]), "windows": []},
        )  # fmt: skip
        stream["windows"].append(
            {
                "number": window.number,
                "size": window.size,
                "first_at": window.first_at.isoformat(),
                "last_at": window.last_at.isoformat(),
                "p_value": window.p_value,
                "cusum": window.cusum,
                "alarm": window.alarm_active,
                "fired": window.fired,
                "episode": window.episode,
                "outcomes": window.outcomes,
                "estimated_accuracy": (window.estimate or {}).get("accuracy"),
                "estimated_macro_f1": (window.estimate or {}).get("macro_f1"),
                "feedback": realised.get(window.id, (0, None))[0],
                "realised_accuracy": realised.get(window.id, (0, None))[1],
            }
        )
    return list(streams.values())


def realised_by_window(session: Session) -> dict[int, tuple[int, float]]:
    """Per window: how many of its predictions got feedback, and the share that were right."""
    rows = session.execute(
        select(ObservedPrediction.window_id, ObservedPrediction.predicted, Feedback.true_plane)
        .join(Feedback, Feedback.prediction_id == ObservedPrediction.prediction_id)
        .where(ObservedPrediction.window_id.is_not(None))
    ).all()
    tallies: dict[int, list[int]] = {}
    for window_id, predicted, truth in rows:
        if window_id is None:  # excluded by the query; the column may be null
            continue
        tally = tallies.setdefault(window_id, [0, 0])
        tally[0] += 1
        tally[1] += predicted == truth.value
    return {window: (n, right / n) for window, (n, right) in tallies.items()}


def performance(session: Session, model_name: str, version: int) -> dict[str, Any] | None:
    """Measured on the version's predictions clinicians gave feedback on, with the label-free
    estimate on exactly those predictions and the gap between the two; None without feedback."""
    rows = session.execute(
        select(ObservedPrediction, Feedback.true_plane)
        .join(Feedback, Feedback.prediction_id == ObservedPrediction.prediction_id)
        .where(
            ObservedPrediction.model_name == model_name,
            ObservedPrediction.model_version == version,
        )
        .order_by(ObservedPrediction.seq)
    ).all()
    if not rows:
        return None
    classes = classes_of(session, model_name, version)
    probabilities = np.array([[row.probabilities.get(c, 0.0) for c in classes] for row, _ in rows])
    truth = [classes.index(plane.value) for _, plane in rows]
    found = measured(
        truth, probabilities.argmax(axis=1), probabilities, classes, bootstrap=BOOTSTRAP
    )
    expected = estimated(probabilities, classes)
    return {
        "model": model_name,
        "model_version": version,
        "feedback": len(rows),
        "measured": found.to_dict(),
        "estimated": expected.to_dict(),
        "gap": gap(expected, found),
        "reliability": reliability(probabilities, np.array(truth)),
    }


def reliability(
    probabilities: NDArray[np.float64], truth: NDArray[np.int64]
) -> list[dict[str, float]]:
    """The reliability diagram's bins that hold predictions: confidence against accuracy."""
    table = diagram(probabilities.max(axis=1), probabilities.argmax(axis=1) == truth)
    return [
        {
            "low": b / ECE_BINS,
            "high": (b + 1) / ECE_BINS,
            "count": int(table.count[b]),
            "confidence": float(table.confidence[b]),
            "accuracy": float(table.accuracy[b]),
        }
        for b in np.flatnonzero(table.count)
    ]


def alarms(session: Session) -> list[dict[str, Any]]:
    """Every alarm episode's request: published, waiting, or a recommendation."""
    return [
        {
            "request_id": request.request_id,
            "model": request.model_name,
            "model_version": request.model_version,
            "segment": request.segment,
            "episode": request.episode,
            "reason": request.reason,
            "automatic": request.automatic,
            "published_at": None
            if request.published_at is None
            else request.published_at.isoformat(),
            "created_at": request.created_at.isoformat(),
        }
        for request in session.scalars(
            select(RetrainingRequest).order_by(RetrainingRequest.created_at)
        )
    ]


def carbon(session: Session, site_intensity_g_per_kwh: float) -> dict[str, Any]:
    """Per training run (the version's CodeCarbon figures) and per 1,000 inferences (the
    inference service's energy accounts at the site's grid intensity), each with its method."""
    runs = [
        per_training_run(
            v.model_name, v.version, v.energy_kwh or 0.0, v.emissions_kg_co2e or 0.0,
            site_carbon_intensity_g_per_kwh=site_intensity_g_per_kwh,
        ).to_dict()
        for v in session.scalars(select(MonitoredVersion).order_by(MonitoredVersion.created_at))
        if v.energy_kwh is not None
    ]  # fmt: skip
    accounts = [
        InferenceAccount(
            a.model_name, a.model_version, a.compute_device, a.energy_joules, a.requests,
            a.predictions, a.method,
        )
        for a in session.scalars(select(EnergyAccount).order_by(EnergyAccount.window_start))
    ]  # fmt: skip
    serving = per_thousand_inferences(accounts, site_intensity_g_per_kwh) if accounts else []
    return {
        "training_runs": runs,
        "per_1000_inferences": [footprint.to_dict() for footprint in serving],
        "per_1000_inferences_status": "measured" if serving else NOT_MEASURED,
    }


def versions(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "model": v.model_name,
            "model_version": v.version,
            "storage_uri": v.storage_uri,
            "watched_for_drift": v.alarm_rule is not None,
            "alarm_rule": v.alarm_rule,
            "promoted_at": None if v.promoted_at is None else v.promoted_at.isoformat(),
        }
        for v in session.scalars(select(MonitoredVersion).order_by(MonitoredVersion.created_at))
    ]


def classes_of(session: Session, model_name: str, version: int) -> list[str]:
    """The version's classes as its drift reference lists them, else every plane."""
    watched = session.get(MonitoredVersion, (model_name, version))
    if watched is not None and watched.reference is not None:
        listed: Sequence[str] = watched.reference["classes"]
        return list(listed)
    return [plane.value for plane in Plane]


def summary(session: Session, site_intensity_g_per_kwh: float) -> dict[str, Any]:
    """All of it: versions, drift, alarms, performance per version, carbon."""
    watched = versions(session)
    return {
        "versions": watched,
        "drift": drift(session),
        "alarms": alarms(session),
        "performance": [
            found
            for v in watched
            if (found := performance(session, v["model"], v["model_version"])) is not None
        ],
        "carbon": carbon(session, site_intensity_g_per_kwh),
    }
