"""`fetal.predictions`: what the monitor learns of each served prediction, and nothing more.

One `PredictionMade` per image. It holds what drift and performance monitoring need (the
probabilities, the embedding the drift reference sampled, the image statistics the reference
summarised, the scanner model, latency, where the model ran) and nothing that identifies a
patient: no pixels, no header value but the scanner's make and model (which `ImageReceived`
keeps too), and ids this server generated itself, since a client's own request id may be an
accession number.

Every event names the arm of the rollout that made it (`arms.py`). A shadow scoring of the
challenger gets an event of its own: prediction id ``<request id>-<image index>-shadow``, the
challenger's version, ``arm`` = ``ARM_SHADOW`` and ``shadow_of`` = the id of the champion's
prediction of the same image, so the monitor pairs the two without a join on pixels. Its
``latency_ms`` is what the challenger would have taken to answer: the request's decoding and
the challenger's own run, not the wait behind the champion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalmlops.imaging.statistics import per_image_statistics, projected
from fetalmlops.inference.arms import Arm
from fetalmlops.inference.dicom import Scanner
from fetalmlops.v1 import images_pb2, predictions_pb2


@dataclass(frozen=True)
class Observation:
    """One image as the model saw it: the facts its event is made of."""

    probabilities: Sequence[float]  # in the archive's class order
    embedding: NDArray[np.floating[Any]] | None  # the head's input; None for archives without it
    thumbnail: NDArray[np.uint8]  # the square greyscale thumbnail statistics are computed on
    rows: int  # of the picture received
    columns: int
    scanner: Scanner | None = None


@dataclass(frozen=True)
class Served:
    """Who answered: the same for every image of a request."""

    request_id: str
    model_name: str
    model_version: int
    classes: Sequence[str]
    compute_device: str
    latency_ms: float
    arm: Arm = Arm.CHAMPION
    challenger_failed: bool = False  # canary: the challenger was chosen, failed, and we answered


def prediction_id(request_id: str, index: int, arm: Arm = Arm.CHAMPION) -> str:
    """The id an answer and its event carry; a shadow's is the champion's with ``-shadow``."""
    own = f"{request_id}-{index}"
    return f"{own}-shadow" if arm is Arm.SHADOW else own


def prediction_event(
    served: Served, index: int, observation: Observation
) -> predictions_pb2.PredictionMade:
    probabilities = [float(p) for p in observation.probabilities]
    best = int(np.argmax(probabilities))
    event = predictions_pb2.PredictionMade(
        request_id=served.request_id,
        prediction_id=prediction_id(served.request_id, index, served.arm),
        model_name=served.model_name,
        model_version=served.model_version,
        probabilities=dict(zip(served.classes, probabilities, strict=True)),
        predicted_plane=served.classes[best],
        image_statistics=image_statistics(observation),
        latency_ms=served.latency_ms,
        compute_device=served.compute_device,
        arm=served.arm.on_the_wire,
        challenger_failed=served.challenger_failed,
    )
    if served.arm is Arm.SHADOW:
        event.shadow_of = prediction_id(served.request_id, index)
    if observation.embedding is not None:
        event.embedding_summary.extend(embedding_summary(observation.embedding).tolist())
    if observation.scanner is not None:
        event.device.CopyFrom(
            images_pb2.Device(
                manufacturer=observation.scanner.manufacturer, model=observation.scanner.model
            )
        )
    return event


def image_statistics(observation: Observation) -> predictions_pb2.ImageStatistics:
    statistics = per_image_statistics(observation.thumbnail[None, ...])
    return predictions_pb2.ImageStatistics(
        **{name: float(values[0]) for name, values in statistics.items()},
        rows=observation.rows,
        columns=observation.columns,
    )


def embedding_summary(embedding: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """The embedding as the drift reference samples it: projected when wider than 64."""
    row: NDArray[np.float64] = projected(np.asarray(embedding).reshape(1, -1))[0]
    return row
