"""The training loop: one readable function, resumable, and the same result every time.

`train` reads top to bottom, as torchvision's `references/classification/train.py` does: set up
(or resume), then for each epoch fit, score on the validation images, keep the best and write
the checkpoint, until the epochs or the patience run out. What the steps rely on lives beside
it: how the weights are fit (AdamW, warm-up then cosine, class-weighted cross-entropy, mixed
precision on CUDA only) in `optimisation`, the best epoch and the patience in `early_stopping`,
the checkpoint and which run it may continue in `resumption`, the seed and the deterministic
kernels in `determinism`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from torch import nn
from torch.utils.data import DataLoader

from fetalmlops.archive.preprocessing import Preprocessing
from fetalmlops.trainer.backbones import Strategy, backbone, build
from fetalmlops.trainer.checkpoint import CheckpointMismatch
from fetalmlops.trainer.data import (
    Augmentation,
    Item,
    LabelledImages,
    derived_seed,
    labels_of,
    seed_worker,
)
from fetalmlops.trainer.determinism import deterministic, seed_everything
from fetalmlops.trainer.early_stopping import EpochRecord, RunProgress
from fetalmlops.trainer.optimisation import Fitting, fitting, weighted_cross_entropy
from fetalmlops.trainer.resumption import CHECKPOINT, resume, run_identity, save

__all__ = [
    "CheckpointMismatch",
    "EpochRecord",
    "TrainConfig",
    "TrainResult",
    "predict_logits",
    "train",
]
# Settings that change where or how fast a run goes, not what it computes.
NOT_IN_RUN_IDENTITY = ("num_workers", "device")


@dataclass(frozen=True)
class TrainConfig:
    backbone: str = "tiny"
    strategy: Strategy = Strategy.FINE_TUNE
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 5  # epochs without a better validation macro-F1 before stopping
    seed: int = 0
    input_size: int | None = None  # None: the backbone's own input size
    num_workers: int = 0
    amp: bool = True  # effective only on CUDA
    label_smoothing: float = 0.0
    weights: Path | None = None  # a local state_dict for the encoder; never downloaded
    augment: bool = True
    device: str | None = None  # None: CUDA if available, else CPU

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["strategy"] = self.strategy.value
        values["weights"] = None if self.weights is None else str(self.weights)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The configuration `to_dict` gave (a registered version's recipe); settings this
        build does not know are left out."""
        known = {f.name for f in fields(cls)} & values.keys()
        given = {name: values[name] for name in known}
        if "strategy" in given:
            given["strategy"] = Strategy(given["strategy"])
        if given.get("weights") is not None:
            given["weights"] = Path(given["weights"])
        return cls(**given)

    def identity(self) -> dict[str, Any]:
        """What the run computes: every setting but those that only change where or how fast
        it runs. A registered version (`job.training_run`) and a checkpoint
        (`resumption.run_identity`) both name their run by it."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IN_RUN_IDENTITY}

    def preprocessing(self) -> Preprocessing:
        """The input the model sees, in training and in serving: the backbone's size, and the
        normalisation its published weights were trained with when they are loaded."""
        spec = backbone(self.backbone)
        size = self.input_size or spec.input_size
        if self.weights is None or spec.normalisation is None:
            return Preprocessing(size=size)
        mean, std = spec.normalisation
        return Preprocessing(size=size, mean=mean, std=std)


@dataclass
class TrainResult:
    model: nn.Module  # the best epoch's weights, eval mode, on CPU
    best_epoch: int
    best_val_macro_f1: float
    epochs_run: int  # epochs completed by the run as a whole, resumed ones included
    history: list[EpochRecord]  # epoch, loss, val_macro_f1, lr, seconds, images_per_second
    resumed_from_epoch: int | None
    val_logits: NDArray[np.float32]  # of the best model
    val_labels: NDArray[np.int64]
    train_images_per_second: float


@dataclass(frozen=True)
class _Batches:
    """The training images, in an order and with augmentations that are functions of the seed
    and the epoch: a resumed run draws exactly what an uninterrupted one would have."""

    images: LabelledImages
    order: torch.Generator
    loader: DataLoader[tuple[torch.Tensor, int]]

    def of_epoch(self, seed: int, epoch: int) -> DataLoader[tuple[torch.Tensor, int]]:
        self.images.set_epoch(epoch)
        self.order.manual_seed(derived_seed(seed, epoch))
        return self.loader


@dataclass(frozen=True)
class _Validation:
    """The images every epoch is scored on, and the best epoch chosen by."""

    config: TrainConfig
    items: Sequence[Item]
    num_classes: int
    device: torch.device

    @property
    def labels(self) -> NDArray[np.int64]:
        return labels_of(self.items)

    def logits(self, model: nn.Module) -> NDArray[np.float32]:
        config = self.config
        return predict_logits(
            model,
            self.items,
            config.preprocessing(),
            config.batch_size,
            self.device,
            config.num_workers,
        )

    def macro_f1(self, model: nn.Module) -> float:
        # Imported here: evaluation brings matplotlib, which a run needs only at this point.
        from fetalmlops.trainer.evaluation import macro_f1

        return float(macro_f1(self.labels, self.logits(model).argmax(1), self.num_classes))


def train(
    config: TrainConfig,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    classes: Sequence[str],
    checkpoint_dir: Path,
    progress: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Fit `config.backbone` to `train_items`, keeping the epoch with the best val macro-F1.

    `on_epoch` is called with each epoch's record once its checkpoint is on disk (to publish
    progress); an exception it raises stops the run with that checkpoint intact.
    """
    _validate(config, train_items, val_items, classes)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    validation = _Validation(config, val_items, len(classes), device)
    last = checkpoint_dir / CHECKPOINT
    identity = run_identity(config.identity(), train_items, val_items, classes)

    with deterministic():
        seed_everything(config.seed)
        fit = _fitting(config, len(classes), len(train_items), device)
        criterion = weighted_cross_entropy(
            labels_of(train_items), len(classes), config.label_smoothing
        ).to(device)
        state, resumed_from = RunProgress(), None
        if last.exists():
            state = resume(last, identity, fit)
            resumed_from = state.epoch
        batches = _batches(config, train_items, device)
        with _progress_bar(progress) as bar:
            for epoch in range(state.epoch + 1, config.epochs + 1):
                if state.patience_spent(config.patience):
                    break
                record = _epoch(epoch, config, fit, criterion, batches, validation, bar)
                state.complete(epoch, record, fit.model)
                save(last, identity, state, fit)
                if on_epoch is not None:
                    on_epoch(record)
        fit.model.load_state_dict(state.best_state)
        val_logits = validation.logits(fit.model)
    return _result(fit.model.cpu().eval(), state, resumed_from, val_logits, validation.labels)


def _fitting(config: TrainConfig, num_classes: int, images: int, device: torch.device) -> Fitting:
    model = build(config.backbone, num_classes, config.strategy, config.weights).to(device)
    return fitting(
        model,
        config.learning_rate,
        config.weight_decay,
        config.epochs,
        steps_per_epoch=math.ceil(images / config.batch_size),
        mixed_precision=config.amp and device.type == "cuda",
    )


def _batches(config: TrainConfig, items: Sequence[Item], device: torch.device) -> _Batches:
    augment = Augmentation() if config.augment else None
    images = LabelledImages(items, config.preprocessing(), augment, config.seed)
    order = torch.Generator()
    loader = DataLoader(
        images,
        batch_size=config.batch_size,
        shuffle=True,
        generator=order,
        num_workers=config.num_workers,
        worker_init_fn=seed_worker,
        pin_memory=device.type == "cuda",
    )
    return _Batches(images, order, loader)


def _epoch(
    epoch: int,
    config: TrainConfig,
    fit: Fitting,
    criterion: nn.Module,
    batches: _Batches,
    validation: _Validation,
    bar: Progress,
) -> EpochRecord:
    """One pass over the training images, then the score on the validation images."""
    started = time.perf_counter()
    loader = batches.of_epoch(config.seed, epoch)
    task = bar.add_task(f"epoch {epoch}/{config.epochs}", total=len(loader), loss=math.nan, f1="…")
    lr = fit.learning_rate  # before the epoch's steps move it along the schedule
    loss = _fit_one_epoch(fit, loader, criterion, bar, task)
    train_seconds = time.perf_counter() - started
    score = validation.macro_f1(fit.model)
    bar.update(task, f1=f"{score:.3f}")
    return {
        "epoch": epoch,
        "loss": loss,
        "val_macro_f1": score,
        "lr": lr,
        "seconds": time.perf_counter() - started,
        "images_per_second": len(batches.images) / train_seconds,
    }


def _fit_one_epoch(
    fit: Fitting,
    loader: DataLoader[tuple[torch.Tensor, int]],
    criterion: nn.Module,
    bar: Progress,
    task: TaskID,
) -> float:
    """One pass over the training images; returns the mean loss per image."""
    device = next(fit.model.parameters()).device
    fit.model.train()
    loss_sum, seen = 0.0, 0
    for images, labels in loader:
        loss = fit.step(
            images.to(device, non_blocking=True), labels.to(device, non_blocking=True), criterion
        )
        loss_sum += loss * len(labels)
        seen += len(labels)
        bar.update(task, advance=1, loss=loss_sum / seen)
    return loss_sum / seen


def _result(
    model: nn.Module,
    state: RunProgress,
    resumed_from: int | None,
    val_logits: NDArray[np.float32],
    val_labels: NDArray[np.int64],
) -> TrainResult:
    seconds_per_image = np.mean([1.0 / r["images_per_second"] for r in state.history])
    return TrainResult(
        model=model,
        best_epoch=state.best_epoch,
        best_val_macro_f1=state.best_score,
        epochs_run=state.epoch,
        history=state.history,
        resumed_from_epoch=resumed_from,
        val_logits=val_logits,
        val_labels=val_labels,
        train_images_per_second=float(1.0 / seconds_per_image),
    )


def predict_logits(
    model: nn.Module,
    items: Sequence[Item],
    prep: Preprocessing,
    batch_size: int,
    device: str | torch.device,
    workers: int = 0,
) -> NDArray[np.float32]:
    """Logits (images × classes) of the un-augmented images; moves `model` to `device` and
    leaves it in eval mode. Decoding, not the model, bounds this on a GPU: use the workers."""
    if not items:
        raise ValueError("no images to predict")
    model.to(device).eval()
    loader = DataLoader(
        LabelledImages(items, prep), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    with torch.inference_mode():
        batches = [model(images.to(device)).float().cpu() for images, _ in loader]
    return torch.cat(batches).numpy()


def _validate(
    config: TrainConfig,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    classes: Sequence[str],
) -> None:
    backbone(config.backbone)
    if config.epochs < 1 or config.batch_size < 1 or config.patience < 1:
        raise ValueError("epochs, batch_size and patience must be at least 1")
    if not train_items or not val_items:
        raise ValueError("training needs both training and validation images")
    for name, items in (("train", train_items), ("val", val_items)):
        labels = labels_of(items)
        if labels.min() < 0 or labels.max() >= len(classes):
            raise ValueError(f"{name} labels must lie in [0, {len(classes)})")


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("val macro-F1 {task.fields[f1]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )
