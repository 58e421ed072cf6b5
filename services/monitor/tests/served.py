"""A synthetic served model for the monitor's tests: a drift reference document as the trainer
writes it, and prediction events from the same scanner or from a shifted one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from fetalmlops.common.bus import EmbeddedBus, Record, publish_event, read_event
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import create_engine_for, session_scope, upgrade
from fetalmlops.common.planes import Plane
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.monitor.settings import MonitorSettings
from fetalmlops.monitor.stream import Monitor
from fetalmlops.v1 import images_pb2, models_pb2, predictions_pb2, training_pb2

CLASSES = [plane.value for plane in Plane]
PRIOR = np.array([0.2, 0.25, 0.15, 0.15, 0.1, 0.15])
DIM = 16
STATISTICS = ("mean", "std", "p05", "p95", "dark_fraction")
MODEL = "fetal-planes"
WINDOW = 50
URI = f"s3://fetal-models/{MODEL}/v1/"


def rows(n: int, rng: np.random.Generator, brightness: float = 0.0) -> dict[str, Any]:
    """``n`` served images: classes from the prior, calibrated-looking probabilities, image
    statistics of one scanner (``brightness`` moves them, as another scanner would) and
    embeddings that follow both the class and the picture."""
    truth = rng.choice(len(CLASSES), size=n, p=PRIOR)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), truth] += 2.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    mean = np.clip(rng.normal(0.30 + brightness, 0.04, n), 0, 1)
    statistics = np.column_stack(
        [mean, rng.normal(0.20, 0.02, n), np.clip(mean - 0.25, 0, 1), np.clip(mean + 0.35, 0, 1),
         np.clip(rng.normal(0.40 - brightness, 0.05, n), 0, 1)]
    )  # fmt: skip
    centres = np.random.default_rng(99).normal(0, 1, (len(CLASSES), DIM))
    embeddings = centres[truth] + rng.normal(0, 1, (n, DIM)) + 4 * brightness
    return {"truth": truth, "probabilities": probabilities, "statistics": statistics,
            "embeddings": embeddings}  # fmt: skip


def drift_reference(n: int = 256, seed: int = 0) -> dict[str, Any]:
    """The document a version carries as `drift_reference.json`, with its sample rows."""
    split = rows(n, np.random.default_rng(seed))
    predicted = split["probabilities"].argmax(axis=1)
    return {
        "classes": CLASSES,
        "class_prior": (np.bincount(predicted, minlength=len(CLASSES)) / n).tolist(),
        "label_prior": (np.bincount(split["truth"], minlength=len(CLASSES)) / n).tolist(),
        "confidence_histogram": {"edges": [], "counts": []},
        "confidence_mean": float(split["probabilities"].max(axis=1).mean()),
        "image_stats": {},
        "embedding": {"dim": DIM, "sample": split["embeddings"].tolist(), "sample_rows": n},
        "n": n,
        "sample": {
            "probabilities": split["probabilities"].tolist(),
            "image_stats": {
                name: split["statistics"][:, i].tolist() for i, name in enumerate(STATISTICS)
            },
        },
    }


def predictions(
    n: int, seed: int, brightness: float = 0.0, scanner: str = "Sonora/X9", version: int = 1
) -> list[predictions_pb2.PredictionMade]:
    """``n`` prediction events, one image a request."""
    served = rows(n, np.random.default_rng(seed), brightness)
    manufacturer, model = scanner.split("/")
    events = []
    for i in range(n):
        probabilities = served["probabilities"][i]
        statistics = dict(zip(STATISTICS, served["statistics"][i].tolist(), strict=True))
        events.append(
            predictions_pb2.PredictionMade(
                request_id=uuid.UUID(int=seed * 100_000 + i).hex,
                prediction_id=uuid.UUID(int=seed * 100_000 + i + 1).hex,
                model_name=MODEL,
                model_version=version,
                probabilities=dict(zip(CLASSES, probabilities.tolist(), strict=True)),
                predicted_plane=CLASSES[int(probabilities.argmax())],
                embedding_summary=served["embeddings"][i].tolist(),
                image_statistics=predictions_pb2.ImageStatistics(
                    **statistics, rows=600, columns=800
                ),
                device=images_pb2.Device(manufacturer=manufacturer, model=model),
                compute_device="cpu",
            )
        )
    return events


def records(topic: str, key_events: list[tuple[str, Any]]) -> list[Record]:
    """The records a consumer of ``topic`` would read for these events."""
    bus = EmbeddedBus(partitions=1)
    for key, event in key_events:
        publish_event(bus, topic, key, event, "test")
    subscription = bus.subscribe([topic], "test")
    read: list[Record] = []
    while batch := subscription.poll(0.05):
        read.extend(batch)
    subscription.close()
    return read


def monitor_at(tmp_path: Path, reference: dict[str, object], **own: object) -> Monitor:
    url = f"sqlite:///{tmp_path}/monitor.db"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    store.put("fetal-models", f"{MODEL}/v1/drift_reference.json", json.dumps(reference).encode())
    clients = Clients(store, create_engine_for(url), EmbeddedBus(partitions=1))
    settings_ = MonitorSettings(window_size=WINDOW, calibration_windows=60, **own)  # type: ignore[arg-type]
    return Monitor(settings, settings_, clients)


def trained(monitor: Monitor) -> None:
    event = models_pb2.ModelTrained(model_name=MODEL, version=1, storage_uri=URI, energy_kwh=0.2)
    for record in records(monitor.settings.topics.models_trained, [(MODEL, event)]):
        monitor.on_model(record)


def stream(monitor: Monitor, events: list) -> None:  # type: ignore[type-arg]
    topic = monitor.settings.topics.predictions
    for record in records(topic, [(e.request_id, e) for e in events]):
        monitor.on_prediction(record)


def requested(monitor: Monitor) -> list[training_pb2.TrainingRequested]:
    subscription = monitor.clients.bus.subscribe(
        [monitor.settings.topics.training_requested], "check"
    )
    events = []
    while batch := subscription.poll(0.05):
        events.extend(read_event(record) for record in batch)
    subscription.close()
    return events  # type: ignore[return-value]


def count(monitor: Monitor, what: object) -> int:
    with session_scope(monitor.engine) as session:
        return int(session.scalar(select(func.count()).select_from(what)) or 0)  # type: ignore[arg-type]
