"""The training loop: one readable function, resumable, and the same result every time.

In the spirit of torchvision's `references/classification/train.py`: AdamW on the trainable
parameters, a per-step linear warm-up then cosine schedule, class-weighted cross-entropy for the
imbalance (see `fetalmlops.trainer.data`), mixed precision on CUDA only, early stopping on the
validation macro-F1.

Reproducible: a fixed seed fixes the model's initial weights, the order of every epoch and every
augmentation (each a function of seed and epoch, see `data`), and torch runs its deterministic
kernels where it has them. Resumable: after each epoch, `checkpoint_dir/last.pt` is replaced
atomically by everything the next epoch depends on, RNG states included, so a Kubernetes Job
restarted after a kill continues where it stopped and ends with the weights and history an
uninterrupted run would have had. A checkpoint left by a different run (another config, other
data) is an error, never silently mixed in.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
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

from fetalmlops.trainer import checkpoint
from fetalmlops.trainer.backbones import Strategy, backbone, build, trainable_parameters
from fetalmlops.trainer.checkpoint import CheckpointMismatch
from fetalmlops.trainer.data import (
    Augmentation,
    Item,
    LabelledImages,
    class_weights,
    derived_seed,
    labels_of,
    seed_worker,
)
from fetalmlops.trainer.preprocessing import Preprocessing

__all__ = ["CheckpointMismatch", "TrainConfig", "TrainResult", "predict_logits", "train"]

CHECKPOINT = "last.pt"
# Settings that change how fast a run goes but not what it computes.
NOT_IN_RUN_IDENTITY = ("num_workers",)

EpochRecord = dict[str, float]


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

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(size=self.input_size or backbone(self.backbone).input_size)


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


@dataclass
class _Progress:
    """Where the run stands: what the next epoch depends on besides `_Fitting`."""

    epoch: int = 0  # epochs completed
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    stale_epochs: int = 0
    history: list[EpochRecord] = field(default_factory=list)


@dataclass
class _Fitting:
    """The objects whose state, with `_Progress`, a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in _FITTING}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for name in _FITTING:
            getattr(self, name).load_state_dict(states[name])


_FITTING = ("model", "optimizer", "scheduler", "scaler")


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
    use_amp = config.amp and device.type == "cuda"
    prep = config.preprocessing()
    val_labels = labels_of(val_items)
    last = checkpoint_dir / CHECKPOINT
    identity = _run_identity(config, train_items, val_items, classes)

    with _deterministic():
        _seed_everything(config.seed)
        fit = _fitting(config, len(classes), len(train_items), device, use_amp)
        criterion = nn.CrossEntropyLoss(
            weight=class_weights(labels_of(train_items), len(classes)).to(device),
            label_smoothing=config.label_smoothing,
        )
        state, resumed_from = _Progress(), None
        if last.exists():
            state = _resume(last, identity, fit)
            resumed_from = state.epoch
        augment = Augmentation() if config.augment else None
        dataset = LabelledImages(train_items, prep, augment, config.seed)
        order = torch.Generator()
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            shuffle=True,
            generator=order,
            num_workers=config.num_workers,
            worker_init_fn=seed_worker,
            pin_memory=device.type == "cuda",
        )
        with _progress_bar(progress) as bar:
            for epoch in range(state.epoch + 1, config.epochs + 1):
                if state.stale_epochs >= config.patience:
                    break
                started = time.perf_counter()
                dataset.set_epoch(epoch)
                order.manual_seed(derived_seed(config.seed, epoch))
                task = bar.add_task(
                    f"epoch {epoch}/{config.epochs}", total=len(loader), loss=math.nan, f1="…"
                )
                lr = fit.optimizer.param_groups[0]["lr"]
                loss = _fit_one_epoch(fit, loader, criterion, use_amp, bar, task)
                train_seconds = time.perf_counter() - started

                logits = predict_logits(
                    fit.model, val_items, prep, config.batch_size, device, config.num_workers
                )
                score = _macro_f1(val_labels, logits.argmax(1), len(classes))
                bar.update(task, f1=f"{score:.3f}")
                if score > state.best_score:
                    state.best_score, state.best_epoch, state.stale_epochs = score, epoch, 0
                    state.best_state = {
                        k: v.detach().to("cpu", copy=True)
                        for k, v in fit.model.state_dict().items()
                    }
                else:
                    state.stale_epochs += 1
                record: EpochRecord = {
                    "epoch": epoch,
                    "loss": loss,
                    "val_macro_f1": score,
                    "lr": lr,
                    "seconds": time.perf_counter() - started,
                    "images_per_second": len(train_items) / train_seconds,
                }
                state.history.append(record)
                state.epoch = epoch
                _save_checkpoint(last, identity, state, fit)
                if on_epoch is not None:
                    on_epoch(record)

        model = fit.model
        model.load_state_dict(state.best_state)
        val_logits = predict_logits(
            model, val_items, prep, config.batch_size, device, config.num_workers
        )
    model.cpu().eval()
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


def _fitting(
    config: TrainConfig, num_classes: int, images: int, device: torch.device, use_amp: bool
) -> _Fitting:
    model = build(config.backbone, num_classes, config.strategy, config.weights).to(device)
    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.weight_decay), lr=config.learning_rate
    )
    steps_per_epoch = math.ceil(images / config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total)
    )
    return _Fitting(model, optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=use_amp))


def _fit_one_epoch(
    fit: _Fitting,
    loader: DataLoader[tuple[torch.Tensor, int]],
    criterion: nn.Module,
    use_amp: bool,
    bar: Progress,
    task: TaskID,
) -> float:
    """One pass over the training images; returns the mean loss per image."""
    device = next(fit.model.parameters()).device
    fit.model.train()
    loss_sum, seen = 0.0, 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss = criterion(fit.model(images), labels)
        fit.optimizer.zero_grad(set_to_none=True)
        fit.scaler.scale(loss).backward()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        fit.scheduler.step()
        loss_sum += float(loss.detach()) * len(labels)
        seen += len(labels)
        bar.update(task, advance=1, loss=loss_sum / seen)
    return loss_sum / seen


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


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _macro_f1(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], num_classes: int) -> float:
    # Imported here: evaluation brings matplotlib, which a run needs only at this point.
    from fetalmlops.trainer.evaluation import macro_f1

    return float(macro_f1(y_true, y_pred, num_classes))


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


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decaying biases and normalisation scales towards zero regularises nothing useful
    # (torchvision's reference script offers the same split as --norm-weight-decay 0).
    params = trainable_parameters(model)
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the caller's setting and random
    generators restored after.

    warn_only: a few CUDA kernels (adaptive pooling's backward) have no deterministic version;
    a warning then says so rather than the run failing.
    """
    # cuBLAS reads this when it initialises; a process that already used CUDA keeps its value.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    # The run seeds the process-wide generators; the caller's draws must not become the
    # run's seed's (a test suite's "random" ids would repeat from one run to the next).
    generators = checkpoint.rng_states()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        checkpoint.set_rng_states(generators)


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


def _run_identity(
    config: TrainConfig,
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    classes: Sequence[str],
) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run: the config and the data."""

    def fingerprint(items: Sequence[Item]) -> str:
        return hashlib.sha256(labels_of(items).tobytes()).hexdigest()[:16]

    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_IN_RUN_IDENTITY}
    return {
        **settings,
        "classes": list(classes),
        "train_labels": fingerprint(train_items),
        "val_labels": fingerprint(val_items),
    }


def _save_checkpoint(path: Path, identity: dict[str, Any], state: _Progress, fit: _Fitting) -> None:
    checkpoint.save(path, identity, {"progress": dict(vars(state)), "fitting": fit.state_dict()})


def _resume(path: Path, identity: dict[str, Any], fit: _Fitting) -> _Progress:
    content = checkpoint.load(path, identity)
    fit.load_state_dict(content["fitting"])
    return _Progress(**content["progress"])
