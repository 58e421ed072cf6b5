"""Model versions scored exactly as they are served, for the change-control gate.

A version's `.mar` is unpacked and run by the archive's own `PlaneClassifier` with the
archive's preprocessing, on this machine's CPU: what TorchServe and the inference service would
answer, not what the training loop's model in memory answers. Champion and challenger see the
same images, each decoded once per batch, and give `acceptance.Scores`.

Latency is the forward pass of one image at a time over a fixed sample of those images (the
first `LATENCY_SAMPLE` in image-id order), after a few warm-up passes, measured the same way
for both models one after the other: decoding and the network are left out, so the figure is
the model's and not the object store's. It is this machine's CPU, as the plan's ceiling must
be read; a faster serving node only does better.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from fetalmlops.archive.handler import PlaneClassifier
from fetalmlops.archive.preprocessing import decode
from fetalmlops.changecontrol.acceptance import Scores
from fetalmlops.trainer.job import Loader
from fetalmlops.trainer.snapshots import CLASSES, Entry

BATCH_SIZE = 32
LATENCY_SAMPLE = 64
WARM_UP = 3


def unpacked(mar: Path, directory: Path) -> PlaneClassifier:
    """The archive ``mar`` unpacked into ``directory`` and loaded for the CPU."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(directory)
    return PlaneClassifier.load(directory, torch.device("cpu"))


def score(
    models: Sequence[PlaneClassifier], entries: Sequence[Entry], load: Loader
) -> list[Scores]:
    """Each of ``models`` scored on ``entries``: probabilities in `Plane` order, the truth,
    the scanner segments and the forward latency."""
    if not entries:
        raise ValueError("there are no images to score the models on")
    columns = [plane_columns(model) for model in models]
    probabilities: list[list[NDArray[np.float64]]] = [[] for _ in models]
    for start in range(0, len(entries), BATCH_SIZE):
        pictures = [load(entry)() for entry in entries[start : start + BATCH_SIZE]]
        for index, model in enumerate(models):
            batch = torch.stack([decode(p, model.preprocessing) for p in pictures])
            rows = model.probabilities(batch).double().numpy()
            probabilities[index].append(rows[:, columns[index]])
    truth = np.array([CLASSES.index(e.plane) for e in entries])
    segments = np.array([e.segment for e in entries])
    sample = [load(entry)() for entry in entries[:LATENCY_SAMPLE]]
    return [
        Scores(truth, np.concatenate(probabilities[index]), segments, latency_p95_ms(model, sample))
        for index, model in enumerate(models)
    ]


def plane_columns(model: PlaneClassifier) -> list[int]:
    """The model's probability column of each plane, in `Plane` order."""
    if sorted(model.classes) != sorted(CLASSES):
        raise ValueError(f"the model's classes {model.classes} are not the planes {CLASSES}")
    return [model.classes.index(plane) for plane in CLASSES]


def latency_p95_ms(model: PlaneClassifier, pictures: Sequence[bytes]) -> float:
    """The 95th percentile of the forward time of one image, in milliseconds."""
    images = [decode(picture, model.preprocessing)[None] for picture in pictures]
    for image in images[:WARM_UP]:
        model.probabilities(image)
    times: list[float] = []
    for image in images:
        started = time.perf_counter()
        model.probabilities(image)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.percentile(times, 95))
