"""The benchmark's world: a model trained on the high-end scanners, and its phantom predictions.

The model is trained by the real trainer (`fetalmlops train --dataset`) on canonical 256-pixel
phantom PNGs of the two high-end profiles, so its drift reference is the one the trainer writes.
Predictions are made the way the inference service makes them: each patient visit is one
request whose images go through the archive's own decoding (`v1_batch`), one forward pass that
gives probabilities and embeddings, and `prediction_event`, which measures the thumbnail's grey
levels and projects the embedding. The scanner's make and model travel as a DICOM request's do.

Drawing a phantom picture takes 13–35 ms, so pictures are drawn in a process per core and the
events are cached (by what they were made of) under the benchmark's home: a second run reads them.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from multiprocessing import get_context
from pathlib import Path

import torch

from fetalmlops.carbon.tracking import Footprint, tracked
from fetalmlops.common import model_version
from fetalmlops.datasets.phantom.dataset import ImageSpec, plan, sector_png
from fetalmlops.inference.archive import Archive, Classifier, open_version
from fetalmlops.inference.dicom import Scanner
from fetalmlops.inference.events import Observation, Served, prediction_event
from fetalmlops.inference.protocol import v1_batch
from fetalmlops.v1 import predictions_pb2

HIGH_END = ("highend-a", "highend-b")
PORTABLE = ("portable",)
SIDE = 256  # the anonymizer's canonical PNG
DIFFICULTY = 0.5
MODEL = "planes-benchmark"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# Processes that draw pictures start afresh: a fork of a process that holds torch's threads
# can deadlock.
SPAWN = get_context("spawn")

Tick = Callable[[int], None]


@dataclass(frozen=True)
class Drawn:
    """One picture and what the request it belongs to says about it."""

    request: str
    png: bytes
    scanner: Scanner


def trained_version(home: Path, patients: int, epochs: int, seed: int) -> Path:
    """A KServe-layout version trained on `patients` high-end patients (made once, then kept)."""
    out = home / f"version-p{patients}-e{epochs}-s{seed}"
    if (out / model_version.DRIFT_REFERENCE).exists():
        return out
    data = home / f"train-p{patients}-s{seed}"
    write_dataset(data, plan(patients, seed, HIGH_END), seed)
    fetalmlops = Path(sys.executable).with_name("fetalmlops")
    subprocess.run(
        [
            str(fetalmlops), "train", "--dataset", str(data), "--format", "csv",
            "--out", str(out), "--epochs", str(epochs), "--seed", str(seed), "--no-progress",
        ],
        check=True,
    )  # fmt: skip
    return out


def write_dataset(out: Path, specs: Sequence[ImageSpec], seed: int) -> None:
    """The specs as canonical PNGs with a generic ``labels.csv`` (split by patient)."""
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(CORES, mp_context=SPAWN) as pool:
        pictures = pool.map(_picture, specs, [seed] * len(specs), chunksize=16)
        rows = []
        for spec, png in zip(specs, pictures, strict=True):
            name = f"{spec.image_id}.png"
            (out / name).write_bytes(png)
            rows.append([name, spec.plane.value, spec.patient.patient_key, spec.split])
    with (out / "labels.csv").open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["path", "label", "patient", "split"])
        writer.writerows(rows)


def predictions(
    version: Path,
    home: Path,
    patients: int,
    seed: int,
    profiles: Sequence[str],
    prefix: str,
    tick: Tick = lambda _: None,
) -> list[predictions_pb2.PredictionMade]:
    """The version's prediction events on `patients` fresh patients of `profiles`, one
    request per visit, in visit order (cached)."""
    identity = f"{version.resolve()}|{patients}|{seed}|{','.join(profiles)}|{prefix}|{SIDE}"
    cached = home / f"events-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.bin"
    if cached.exists():
        events = list(read_events(cached.read_bytes()))
        tick(len(events))
        return events
    archive, classifier = loaded(version, home)
    events = []
    for visit in drawn_visits(plan(patients, seed, profiles), seed, prefix):
        events.extend(served(archive, classifier, visit))
        tick(len(visit))
    cached.write_bytes(b"".join(_framed(e.SerializeToString()) for e in events))
    return events


def inference_footprint(
    version: Path, home: Path, patients: int, seed: int, country: str
) -> tuple[Footprint | None, int]:
    """CodeCarbon's footprint of serving `patients` fresh high-end patients' requests (the
    archive's decoding, the forward pass, the events), pictures drawn beforehand; and how many
    predictions that was."""
    archive, classifier = loaded(version, home)
    visits = list(drawn_visits(plan(patients, seed, HIGH_END), seed, "carbon"))
    with tracked(country, "fetalmlops-benchmark") as meter:
        for visit in visits:
            served(archive, classifier, visit)
    return meter.footprint, sum(map(len, visits))


def loaded(version: Path, home: Path) -> tuple[Archive, Classifier]:
    """The version's archive, unpacked under `home`, and its model on the CPU."""
    archive = open_version(version, home / "unpacked")
    return archive, archive.load(torch.device("cpu"))


def served(
    archive: Archive, classifier: Classifier, visit: Sequence[Drawn]
) -> list[predictions_pb2.PredictionMade]:
    """What the inference service publishes for one request: the pictures of one visit."""
    instances = [{"b64": base64.b64encode(drawn.png).decode()} for drawn in visit]
    batch = v1_batch({"instances": instances}, archive)
    probabilities, embeddings = classifier.scores(batch.tensor)
    who = Served(visit[0].request, MODEL, 1, archive.classes, "cpu", 0.0)
    return [
        prediction_event(
            who,
            index,
            Observation(
                probabilities=probabilities[index].tolist(),
                embedding=None if embeddings is None else embeddings[index].numpy(),
                thumbnail=image.thumbnail,
                rows=image.rows,
                columns=image.columns,
                scanner=drawn.scanner,
            ),
        )
        for index, (image, drawn) in enumerate(zip(batch.images, visit, strict=True))
    ]


def drawn_visits(specs: Sequence[ImageSpec], seed: int, prefix: str) -> Iterator[list[Drawn]]:
    """The specs' pictures, drawn in a process per core, one list per visit (a request)."""
    for _, visit in groupby(drawn_pictures(specs, seed, prefix), key=lambda d: d.request):
        yield list(visit)


def drawn_pictures(specs: Sequence[ImageSpec], seed: int, prefix: str) -> Iterator[Drawn]:
    with ProcessPoolExecutor(CORES, mp_context=SPAWN) as pool:
        pictures = pool.map(_picture, specs, [seed] * len(specs), chunksize=16)
        for spec, png in zip(specs, pictures, strict=True):
            profile = spec.profile
            yield Drawn(
                request=f"{prefix}-{spec.patient.patient_key}-v{spec.visit_index + 1}",
                png=png,
                scanner=Scanner(profile.manufacturer, profile.model),
            )


def read_events(data: bytes) -> Iterator[predictions_pb2.PredictionMade]:
    at = 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        yield predictions_pb2.PredictionMade.FromString(data[at + 4 : at + 4 + size])
        at += 4 + size


def _framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _picture(spec: ImageSpec, seed: int) -> bytes:
    return sector_png(spec, seed, SIDE, DIFFICULTY)
