"""Rows as the drift tests take them: a version's drift reference, and a window of predictions.

The reference is the trainer's `drift_reference.json` (`fetalmlops.trainer.reference`, read as
plain JSON: the monitor imports no trainer code); its ``sample`` keeps whole rows of the
held-out split. A window is the monitor's stored predictions, whose image statistics and
projected embeddings the inference service computed with the same `fetalmlops.imaging`
functions. Rows of the reference are distinct images of a patient-level split, one block each;
a window's rows are blocked by request, the frames of one study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from fetalmlops.common.db import ObservedPrediction
from fetalmlops.monitor.drift.base import GREY_LEVEL_STATISTICS, Reference, Window
from fetalmlops.v1 import predictions_pb2


class NoSample(ValueError):
    """A reference without whole rows (written before they were kept): nothing to test on."""


def reference_of(
    document: Mapping[str, Any], segment: str | None = None, min_rows: int = 0
) -> Reference:
    """The drift tests' reference from a drift reference document; NoSample without rows.

    With ``segment``, the rows of that scanner segment alone when the document names each row's
    segment and holds at least ``min_rows`` of it (`segment_rows`); otherwise every row.
    """
    sample = document.get("sample")
    if not sample:
        raise NoSample("the version's drift reference keeps no sample rows")
    classes = tuple(document["classes"])
    probabilities = np.asarray(sample["probabilities"], dtype=np.float64)
    statistics = sample["image_stats"]
    image_stats = np.column_stack([statistics[name] for name in GREY_LEVEL_STATISTICS])
    embeddings = np.asarray(document["embedding"]["sample"], dtype=np.float64)
    rows = None if segment is None else segment_rows(document, segment, min_rows)
    if rows is not None:
        probabilities, image_stats, embeddings = (
            probabilities[rows],
            image_stats[rows],
            embeddings[rows],
        )
        predicted = probabilities.argmax(axis=1)
        return Reference(
            classes=classes,
            class_prior=np.bincount(predicted, minlength=len(classes)) / len(predicted),
            probabilities=probabilities,
            image_stats=image_stats,
            features=GREY_LEVEL_STATISTICS,
            embeddings=embeddings,
            blocks=np.arange(len(probabilities)),
        )
    return Reference(
        classes=classes,
        class_prior=np.asarray(document["class_prior"], dtype=np.float64),
        probabilities=probabilities,
        image_stats=image_stats,
        features=GREY_LEVEL_STATISTICS,
        embeddings=embeddings,
        blocks=np.arange(len(probabilities)),
        prior_studies=float(document["n"]),  # the prior was counted on the whole split
    )


def segment_rows(
    document: Mapping[str, Any], segment: str, min_rows: int
) -> NDArray[np.intp] | None:
    """The sample rows of ``segment`` when there are at least ``min_rows`` of them and others
    beside, else None (every row is then the segment's reference).

    A version trained on several scanners has a reference that mixes them, and one scanner's
    predictions alone differ from the mixture with nothing changed: each scanner is compared
    with its own rows when the reference holds enough of them. A scanner it holds too few of,
    or none (a new one), is compared with the whole reference, as is every scanner of a
    reference that does not name its rows' segments (written before they were kept).
    """
    segments = (document.get("sample") or {}).get("segments")
    if not segments:
        return None
    rows = np.flatnonzero(np.asarray(segments) == segment)
    if len(rows) == len(segments) or len(rows) < max(min_rows, 1):
        return None  # the whole reference is the segment's, or it holds too little of it
    return rows


# The arm a prediction names, as the monitor's rows keep it ("" from before rollouts).
ARMS = {
    predictions_pb2.ARM_CHAMPION: "champion",
    predictions_pb2.ARM_CHALLENGER: "challenger",
    predictions_pb2.ARM_SHADOW: "shadow",
}


def observed(event: predictions_pb2.PredictionMade) -> ObservedPrediction:
    """The row the monitor keeps of a prediction event (all of it PHI-free)."""
    statistics = event.image_statistics
    device = event.device
    return ObservedPrediction(
        prediction_id=event.prediction_id,
        request_id=event.request_id,
        model_name=event.model_name,
        model_version=event.model_version,
        segment=segment(device.manufacturer, device.model),
        predicted=event.predicted_plane,
        probabilities=dict(event.probabilities),
        image_stats={name: getattr(statistics, name) for name in GREY_LEVEL_STATISTICS},
        embedding={"values": list(event.embedding_summary)},
        compute_device=event.compute_device,
        arm=ARMS.get(event.arm, ""),
        shadow_of=event.shadow_of or None,
        challenger_failed=event.challenger_failed,
        latency_ms=event.latency_ms or None,
        occurred_at=event.meta.occurred_at.ToDatetime(tzinfo=UTC),
    )


def segment(manufacturer: str, model: str) -> str:
    """The scanner segment a prediction is watched in: "manufacturer/model", or "unknown"."""
    return "/".join(part for part in (manufacturer, model) if part) or "unknown"


class Timed(Protocol):
    @property
    def occurred_at(self) -> datetime: ...


T = TypeVar("T", bound=Timed)


def windows(rows: Sequence[T], size: int, seconds: float) -> list[Sequence[T]]:
    """The full windows of ``rows`` (arrival order): each closes with its ``size``-th row, or
    before the first row ``seconds`` or more after its own first (event time). What follows
    the last window waits for more rows."""
    cut: list[Sequence[T]] = []
    start = 0
    for at, row in enumerate(rows):
        if at > start and (row.occurred_at - rows[start].occurred_at).total_seconds() >= seconds:
            cut.append(rows[start:at])
            start = at
        if at + 1 - start == size:
            cut.append(rows[start : at + 1])
            start = at + 1
    return cut


def window_of(rows: Sequence[ObservedPrediction], classes: Sequence[str]) -> Window:
    """The drift tests' window of ``rows``, columns in the reference's order."""
    index = {plane: i for i, plane in enumerate(classes)}
    return Window(
        probabilities=np.array(
            [[row.probabilities.get(plane, 0.0) for plane in classes] for row in rows]
        ),
        image_stats=np.array(
            [[row.image_stats[name] for name in GREY_LEVEL_STATISTICS] for row in rows]
        ),
        embeddings=np.array([row.embedding["values"] for row in rows], dtype=np.float64),
        predicted=np.array([index[row.predicted] for row in rows], dtype=np.int64),
        blocks=np.array([row.request_id for row in rows]),
    )
