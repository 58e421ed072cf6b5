"""Resuming a killed run: what a checkpoint holds, and which run it may continue.

After each epoch `checkpoint_dir/last.pt` is replaced atomically (see `checkpoint`) by
everything the next epoch depends on, so a Kubernetes Job restarted after a kill continues where
it stopped and ends with the weights and history an uninterrupted run would have had. A
checkpoint left by a different run (another config, other data) is an error, never silently
mixed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fetalmlops.trainer import checkpoint
from fetalmlops.trainer.data import Item, labels_of
from fetalmlops.trainer.early_stopping import RunProgress
from fetalmlops.trainer.optimisation import Fitting

CHECKPOINT = "last.pt"


def run_identity(
    settings: Mapping[str, Any],
    train_items: Sequence[Item],
    val_items: Sequence[Item],
    classes: Sequence[str],
) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run: the settings that decide what
    it computes (`TrainConfig.identity`) and the data."""

    def fingerprint(items: Sequence[Item]) -> str:
        return hashlib.sha256(labels_of(items).tobytes()).hexdigest()[:16]

    return {
        **settings,
        "classes": list(classes),
        "train_labels": fingerprint(train_items),
        "val_labels": fingerprint(val_items),
    }


def save(path: Path, identity: dict[str, Any], progress: RunProgress, fit: Fitting) -> None:
    checkpoint.save(path, identity, {"progress": dict(vars(progress)), "fitting": fit.state_dict()})


def resume(path: Path, identity: dict[str, Any], fit: Fitting) -> RunProgress:
    """Load `path` into `fit` and the random generators; CheckpointMismatch if another run's."""
    content = checkpoint.load(path, identity)
    fit.load_state_dict(content["fitting"])
    return RunProgress(**content["progress"])
