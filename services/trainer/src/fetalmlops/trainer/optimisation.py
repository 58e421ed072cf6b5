"""How the weights are fit: what is minimised, by which optimiser, on which schedule.

In the spirit of torchvision's `references/classification/train.py`: AdamW on the trainable
parameters, a per-step linear warm-up then cosine schedule, class-weighted cross-entropy for the
imbalance (see `fetalmlops.trainer.data`), mixed precision where the caller asks for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fetalmlops.trainer.backbones import trainable_parameters
from fetalmlops.trainer.data import class_weights

# The objects whose state a checkpoint holds, by the names it holds them under.
FITTING = ("model", "optimizer", "scheduler", "scaler")


@dataclass
class Fitting:
    """The model and what fits it; with the run's progress, the state a checkpoint holds."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    mixed_precision: bool

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in FITTING}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for name in FITTING:
            getattr(self, name).load_state_dict(states[name])

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, images: torch.Tensor, labels: torch.Tensor, criterion: nn.Module) -> float:
        """One optimisation step on a batch already on the model's device; returns its mean loss."""
        with torch.autocast(images.device.type, dtype=torch.float16, enabled=self.mixed_precision):
            loss = criterion(self.model(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())


def fitting(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    epochs: int,
    steps_per_epoch: int,
    mixed_precision: bool,
) -> Fitting:
    """AdamW and its schedule for `model`, which is already on the device it trains on."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay), lr=learning_rate)
    total = epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision)
    return Fitting(model, optimizer, scheduler, scaler, mixed_precision)


def weighted_cross_entropy(
    labels: NDArray[np.int64], num_classes: int, label_smoothing: float
) -> nn.CrossEntropyLoss:
    """Cross-entropy that weighs each class against its share of `labels`, so that a rare plane
    counts as much as a common one."""
    return nn.CrossEntropyLoss(
        weight=class_weights(labels, num_classes), label_smoothing=label_smoothing
    )


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decaying biases and normalisation scales towards zero regularises nothing useful
    # (torchvision's reference script offers the same split as --norm-weight-decay 0).
    params = trainable_parameters(model)
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
