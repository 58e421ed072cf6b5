"""One training run, start to finish: snapshot → trained, evaluated, packaged model version.

`fit_and_package` is the run itself and touches only the local disk: it trains (under the
carbon meter), calibrates, evaluates in and out of domain, measures efficiency, and writes the
version in KServe's layout (`fetalmlops.common.model_version`) with everything a reviewer needs
beside it:

    <dir>/model-store/<model>.mar        TorchScript + handler + preprocessing (+ parameters)
                                         + SHAP background (validation images)
    <dir>/config/config.properties       KServe's TorchServe runtime configuration
    <dir>/model-card.md                  what it is for, how good, where it fails, its carbon
    <dir>/confusion_matrix.png, reliability.png
    <dir>/metrics.json, drift_reference.json

`platform.run_on_platform` wraps it for the cluster.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from fetalmlops.archive.packaging import build_mar, export_torchscript
from fetalmlops.archive.preprocessing import Preprocessing, decode, square_greyscale
from fetalmlops.archive.servable import Calibrated, background_indices
from fetalmlops.carbon import tracking as carbon
from fetalmlops.common import model_version
from fetalmlops.common.db.columns import utcnow
from fetalmlops.datasets.readers import Split
from fetalmlops.imaging.statistics import STATISTICS_SIZE
from fetalmlops.trainer import reference, registry
from fetalmlops.trainer.backbones import backbone
from fetalmlops.trainer.card import CardFacts, model_card
from fetalmlops.trainer.efficiency import measure
from fetalmlops.trainer.evaluation import (
    Evaluation,
    confusion_matrix_png,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram_png,
    softmax,
)
from fetalmlops.trainer.snapshots import CLASSES, Entry, Manifest
from fetalmlops.trainer.training import TrainConfig, TrainResult, predict_logits, train

log = logging.getLogger(__name__)
Loader = Callable[[Entry], Callable[[], bytes]]
# SHAP's background: its expectations are averages over these images, and every explanation
# runs the model on each of them.
BACKGROUND_SIZE = 16


@dataclass(frozen=True)
class Request:
    model_name: str
    config: TrainConfig
    gate: registry.Gate = field(default_factory=registry.Gate)
    country_iso_code: str = "FRA"
    # Named cohorts or devices the model never trained on, scored separately.
    out_of_domain: Mapping[str, Sequence[Entry]] = field(default_factory=dict)
    synthetic: bool = False  # trained on the phantom: the card says so
    fold: int = 0  # of a k-fold snapshot: the fold validated on, the others trained on
    parent_version: int | None = None  # the version whose drift alarm this run answers
    drift_segment: str = ""  # the scanner segment that alarm was raised in ("" none)


@dataclass(frozen=True)
class Packaged:
    directory: Path
    metrics: dict[str, Any]
    drift_reference: dict[str, Any]
    footprint: carbon.Footprint | None


def training_run(model_name: str, snapshot_id: str, config: TrainConfig, fold: int = 0) -> str:
    """The run's name: same model, snapshot (and fold) and configuration → same run."""
    identity = json.dumps([model_name, snapshot_id, fold, config.identity()], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def fit_and_package(
    manifest: Manifest,
    load: Loader,
    request: Request,
    version: int,
    workdir: Path,
    progress: bool = True,
    *,
    models_bucket: str,
) -> Packaged:
    """Trains and packages version ``version`` into ``workdir``: the folder that goes to
    ``models_bucket`` as it is (its card names that place)."""
    config, classes = request.config, list(CLASSES)
    train_set, val_set, test_set = parts(manifest, request.fold)
    if not train_set or not val_set:
        raise ValueError(f"snapshot {manifest.id} needs train and val images: {manifest.counts()}")
    with carbon.tracked(request.country_iso_code) as meter:
        result = train(
            config, items(train_set, load), items(val_set, load), classes,
            workdir / "checkpoints", progress,
        )  # fmt: skip
    footprint = meter.footprint  # None when CodeCarbon could not measure: the card says so
    temperature = fit_temperature(result.val_logits, result.val_labels)
    scored = Scoring(result, config, load, temperature)
    validation = evaluate(result.val_labels, softmax(result.val_logits, temperature), classes)
    test = scored.evaluation(test_set)
    out_of_domain: dict[str, Evaluation] = {}
    for name, entries in request.out_of_domain.items():
        evaluation = scored.evaluation(entries)
        if evaluation is not None:
            out_of_domain[name] = evaluation
    prep = config.preprocessing()
    efficiency = measure(result.model, (prep.channels, prep.size, prep.size))
    val_ece_raw = expected_calibration_error(softmax(result.val_logits), result.val_labels)
    test_ece_raw = scored.uncalibrated_ece(test_set) if test_set else None
    metrics = summary(result, validation, test, out_of_domain, temperature) | {
        "efficiency": efficiency.to_dict(),
        "uncalibrated_val_ece": val_ece_raw,
    }
    # The validation logits are the training run's own: not predicted a second time.
    drift = scored.drift_reference(val_set, softmax(result.val_logits, temperature))

    directory = workdir / "model"
    spec = backbone(config.backbone)
    torchscript = export_torchscript(
        Calibrated(result.model, temperature),
        torch.zeros(2, prep.channels, prep.size, prep.size),
        workdir / "model.pt",
        head=f"model.{spec.head}",
        features=f"model.{spec.features}",
    )
    background = shap_background(val_set, load, prep, config.seed)
    build_mar(
        request.model_name, version, torchscript, prep, classes, directory, background=background
    )
    card = CardFacts(
        model_name=request.model_name,
        version=version,
        backbone=config.backbone,
        strategy=config.strategy,
        snapshot_id=manifest.id,
        snapshot_counts=manifest.counts(),
        classes=classes,
        train_config=config.to_dict(),
        validation=validation,
        validation_ece_uncalibrated=val_ece_raw,
        test=test,
        test_ece_uncalibrated=test_ece_raw,
        temperature=temperature,
        efficiency=efficiency,
        footprint=footprint,
        created_at=utcnow(),
        out_of_domain=out_of_domain,
        cohorts=sorted({e.cohort or e.device for e in manifest.entries} - {""}),
        synthetic=request.synthetic,
        storage_uri=model_version.storage_uri(models_bucket, request.model_name, version),
    )
    (directory / model_version.CARD).write_text(model_card(card))
    (directory / "confusion_matrix.png").write_bytes(
        confusion_matrix_png(test or validation, f"{request.model_name} v{version}")
    )
    (directory / "reliability.png").write_bytes(
        reliability_diagram_png(
            softmax(result.val_logits, temperature), result.val_labels, "validation, calibrated"
        )
    )
    (directory / model_version.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (directory / model_version.DRIFT_REFERENCE).write_text(json.dumps(drift, sort_keys=True))
    return Packaged(directory, metrics, drift, footprint)


def parts(manifest: Manifest, fold: int) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """Train, validation and test entries; a k-fold snapshot has no test part."""
    if manifest.spec.method == "kfold":
        if not 0 <= fold < manifest.spec.folds:
            raise ValueError(f"fold {fold} of a {manifest.spec.folds}-fold snapshot")
        return (*manifest.fold(fold), [])
    return manifest.split(Split.TRAIN), manifest.split(Split.VAL), manifest.split(Split.TEST)


def items(entries: Sequence[Entry], load: Loader) -> list[tuple[Callable[[], bytes], int]]:
    return [(load(e), CLASSES.index(e.plane)) for e in entries]


@dataclass
class Scoring:
    """The trained model applied to further entries: test, out-of-domain, drift reference."""

    result: TrainResult
    config: TrainConfig
    load: Loader
    temperature: float

    def logits(self, entries: Sequence[Entry]) -> NDArray[np.float32]:
        return predict_logits(
            self.result.model, items(entries, self.load), self.config.preprocessing(),
            self.config.batch_size, "cpu",
        )  # fmt: skip

    def probabilities(self, entries: Sequence[Entry]) -> NDArray[np.float64]:
        return softmax(self.logits(entries), self.temperature)

    def uncalibrated_ece(self, entries: Sequence[Entry]) -> float:
        truth = [CLASSES.index(e.plane) for e in entries]
        return expected_calibration_error(softmax(self.logits(entries)), truth)

    def evaluation(self, entries: Sequence[Entry]) -> Evaluation | None:
        if not entries:
            return None
        truth = [CLASSES.index(e.plane) for e in entries]
        return evaluate(truth, self.probabilities(entries), list(CLASSES))

    def drift_reference(
        self, entries: Sequence[Entry], probabilities: NDArray[np.float64]
    ) -> dict[str, Any]:
        prep = self.config.preprocessing()
        pixels = np.stack([thumbnail(self.load(e)()) for e in entries])
        tensors = [
            torch.stack([tensor for tensor, _ in batch])
            for batch in _batches(entries, self.load, prep, self.config.batch_size)
        ]
        head = backbone(self.config.backbone).head
        drift = reference.drift_reference(
            probabilities,
            np.array([CLASSES.index(e.plane) for e in entries]),
            pixels,
            reference.embeddings(self.result.model, head, tensors),
            list(CLASSES),
            segments=[e.segment for e in entries],
        )
        document: dict[str, Any] = drift.to_dict()
        return document


def _batches(
    entries: Sequence[Entry], load: Loader, prep: Any, size: int
) -> list[list[tuple[torch.Tensor, int]]]:
    from fetalmlops.trainer.data import LabelledImages

    images = LabelledImages(items(entries, load), prep)
    rows = [images[i] for i in range(len(images))]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def shap_background(
    entries: Sequence[Entry], load: Loader, prep: Preprocessing, seed: int
) -> NDArray[np.float32]:
    """`BACKGROUND_SIZE` of ``entries``, class-stratified and seeded, preprocessed as served."""
    chosen = background_indices([CLASSES.index(e.plane) for e in entries], BACKGROUND_SIZE, seed)
    return np.stack([decode(load(entries[i])(), prep).numpy() for i in chosen])


def thumbnail(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(square_greyscale(picture, STATISTICS_SIZE))


def summary(
    result: TrainResult,
    validation: Evaluation,
    test: Evaluation | None,
    out_of_domain: Mapping[str, Evaluation],
    temperature: float,
) -> dict[str, Any]:
    """The metrics a version is registered with and judged by (JSON)."""
    metrics: dict[str, Any] = {
        "val_macro_f1": validation.macro_f1,
        "val_balanced_accuracy": validation.balanced_accuracy,
        "val_accuracy": validation.accuracy,
        "val_ece": validation.ece,
        "val_per_class_recall": {c: m.recall for c, m in validation.per_class.items()},
        "temperature": temperature,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_images_per_second": result.train_images_per_second,
        "validation": validation.to_dict(),
    }
    if test is not None:
        metrics |= {
            "test_macro_f1": test.macro_f1,
            "test_balanced_accuracy": test.balanced_accuracy,
            "test_ece": test.ece,
            "test": test.to_dict(),
        }
    for name, evaluation in out_of_domain.items():
        metrics[f"ood_{name}_macro_f1"] = evaluation.macro_f1
        metrics.setdefault("out_of_domain", {})[name] = evaluation.to_dict()
    return metrics
