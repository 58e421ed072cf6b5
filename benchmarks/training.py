"""Training speed against a plain PyTorch loop, and the time to macro-F1 0.90 on the phantom.

Both loops fit the `tiny` backbone (fine-tuned) to the same phantom images on the same device, in
one run: the same `LabelledImages` dataset and `Augmentation`, batch size, AdamW learning rate
and weight decay, class-weighted cross-entropy, number of epochs and DataLoader workers. The
plain loop does nothing else: no validation, checkpoint, progress bar or schedule, and torch's
default (non-deterministic) kernels. On CUDA both use float16 autocast, as the trainer does, so
the ratio compares loops, not precisions.

Training images per second, each figure counting every epoch's images:

* plain loop: images over the time spent iterating its DataLoader (workers started, images
  decoded and augmented, forward, backward, step), synchronised with the device per epoch;
* trainer, its own `train_images_per_second`: the same span inside `train`, which also steps
  the schedule, reads the loss back every batch and runs with deterministic kernels;
* trainer, wall-clock less validation: from the call of `train` to the last epoch's checkpoint
  on disk, less the validation passes its history records, so setup and checkpoints count.

The two loops take turns, one plain epoch after each trainer epoch (run from `on_epoch`, its
time taken out of every trainer figure), so that both meet the same load on a shared machine.
The ratio is printed over all epochs and as the median of the epoch-by-epoch ratios, which
other work on the machine barely moves; the median-epoch column likewise shrugs off the epochs
it slowed down. The overhead lines say what the trainer adds around its training steps.

The trainer's run doubles as the learning benchmark: it trains on the high-end profiles' train
patients and validates on their val patients (split by patient, never by image), and reports
when validation macro-F1 first reaches 0.90, in seconds from the call of `train`.

    make bench            # or: .venv/bin/python benchmarks/training.py --patients 120 --epochs 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.dataset import ImageSpec, plan, sector_png
from fetalmlops.trainer.backbones import build
from fetalmlops.trainer.data import Augmentation, Item, LabelledImages, class_weights, labels_of
from fetalmlops.trainer.training import EpochRecord, TrainConfig, TrainResult, train

SEED = 2026
CLASSES = [p.value for p in Plane]
PROFILES = ("highend-a", "highend-b")
# The cores this process may run on (os.cpu_count ignores an affinity mask such as taskset's).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
CANONICAL_SIDE = 256  # the anonymizer's canonical PNG, which the trainer reads in production
# The trainer tests' rate: the tiny network learns the phantom in about twenty epochs.
LEARNING_RATE = 5e-3
TARGET_F1 = 0.90
TARGET_RATIO = 0.9


@dataclass(frozen=True)
class Png:
    """An item's loader over bytes in memory: neither loop waits on a disk."""

    data: bytes

    def __call__(self) -> bytes:
        return self.data


def canonical_png(spec: ImageSpec) -> bytes:
    return sector_png(spec, SEED, CANONICAL_SIDE)


def phantom(patients: int) -> tuple[list[Item], list[Item], int, int]:
    """Train and val images of the high-end profiles, and how many patients each split has."""
    specs = plan(patients, SEED, PROFILES)
    with ProcessPoolExecutor(CORES) as pool:
        pngs = list(pool.map(canonical_png, specs, chunksize=8))
    splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    people: dict[str, set[str]] = {"train": set(), "val": set(), "test": set()}
    for spec, png in zip(specs, pngs, strict=True):
        splits[spec.split].append((Png(png), CLASSES.index(spec.plane)))
        people[spec.split].add(spec.patient.patient_key)
    return splits["train"], splits["val"], len(people["train"]), len(people["val"])


class PlainLoop:
    """The textbook loop on the trainer's model and data, one epoch per call."""

    def __init__(self, config: TrainConfig, items: Sequence[Item]) -> None:
        self.device = torch.device(config.device or "cpu")
        self.on_cuda = self.device.type == "cuda"
        torch.manual_seed(config.seed)  # the trainer's initial weights
        self.model = build(config.backbone, len(CLASSES), config.strategy).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        weights = class_weights(labels_of(items), len(CLASSES)).to(self.device)
        self.criterion = nn.CrossEntropyLoss(weight=weights)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.on_cuda)
        self.dataset = LabelledImages(items, config.preprocessing(), Augmentation(), config.seed)
        self.loader = DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            shuffle=True,
            num_workers=config.num_workers,
            pin_memory=self.on_cuda,
        )

    def epoch(self, epoch: int) -> float:
        """One pass over the images; returns its seconds."""
        started = time.perf_counter()
        self.model.train()
        self.dataset.set_epoch(epoch)
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.on_cuda):
                loss = self.criterion(self.model(images), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.on_cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


@contextmanager
def aside_from_the_trainer() -> Iterator[None]:
    """Inside `train`: the plain loop leaves the trainer's random streams as they were (its run
    stays the one it would be alone) and uses torch's default kernels, not deterministic ones."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng():
        torch.use_deterministic_algorithms(False)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@dataclass(frozen=True)
class Measurements:
    result: TrainResult
    checkpointed: list[float]  # seconds from the call of `train` to each epoch's checkpoint
    total: float  # seconds from the call of `train` to its return, plain epochs excluded
    plain: list[float]  # seconds of each epoch of the plain loop
    images: int  # training images per epoch

    def train_seconds(self) -> list[float]:
        return [self.images / r["images_per_second"] for r in self.result.history]

    def validation_seconds(self) -> list[float]:
        return [
            r["seconds"] - t for r, t in zip(self.result.history, self.train_seconds(), strict=True)
        ]

    def checkpoint_seconds(self) -> list[float]:
        """After the first epoch (whose span holds the setup): each epoch's time from the end of
        the previous one, less what its record covers (training and validation)."""
        return [
            b - a - r["seconds"]
            for a, b, r in zip(
                self.checkpointed, self.checkpointed[1:], self.result.history[1:], strict=False
            )
        ]

    def wall_seconds_less_validation(self) -> list[float]:
        ends = [0.0, *self.checkpointed]
        return [
            b - a - v for a, b, v in zip(ends, ends[1:], self.validation_seconds(), strict=False)
        ]


def measure(config: TrainConfig, train_items: list[Item], val_items: list[Item]) -> Measurements:
    """The trainer's run, with one epoch of the plain loop after each of its epochs.

    Interleaved, both loops meet the same load on a shared machine, epoch by epoch. The plain
    epochs run inside `on_epoch`; their time is taken out of every trainer figure.
    """
    plain = PlainLoop(config, train_items)
    plain_seconds: list[float] = []
    checkpointed: list[float] = []
    aside = 0.0

    def on_epoch(record: EpochRecord) -> None:
        nonlocal aside
        entered = time.perf_counter()
        checkpointed.append(entered - aside - started)
        with aside_from_the_trainer():
            plain_seconds.append(plain.epoch(int(record["epoch"])))
        aside += time.perf_counter() - entered

    with tempfile.TemporaryDirectory() as checkpoints:
        started = time.perf_counter()
        result = train(config, train_items, val_items, CLASSES, Path(checkpoints), False, on_epoch)
        total = time.perf_counter() - aside - started
    return Measurements(result, checkpointed, total, plain_seconds, len(train_items))


def rates(images: int, seconds: Sequence[float]) -> tuple[float, float]:
    """Images per second over all epochs, and in the median epoch."""
    return images * len(seconds) / sum(seconds), images / statistics.median(seconds)


def report_throughput(run: Measurements) -> None:
    n = run.images
    rows = {
        "plain PyTorch loop": rates(n, run.plain),
        "trainer: train_images_per_second": (
            run.result.train_images_per_second,
            rates(n, run.train_seconds())[1],
        ),
        "trainer: wall-clock less validation": rates(n, run.wall_seconds_less_validation()),
    }
    print(f"\n{'training images/s':<38}{'all epochs':>12}{'median epoch':>14}{'vs plain':>10}")
    base = rows["plain PyTorch loop"][0]
    for name, (overall, median) in rows.items():
        print(f"{name:<38}{overall:>12.1f}{median:>14.1f}{overall / base:>10.2f}")
    overall = rows["trainer: train_images_per_second"][0] / base
    # Each trainer epoch against the plain epoch run right after it: a change of load on the
    # machine slows both of a pair alike, so the median of these ratios barely moves with it.
    paired = statistics.median(p / t for p, t in zip(run.plain, run.train_seconds(), strict=True))
    met = ", ".join(
        f"{'met' if r >= TARGET_RATIO else 'NOT met'} {label}"
        for r, label in ((overall, "over all epochs"), (paired, "epoch by epoch"))
    )
    print(
        f"trainer / plain: {overall:.2f} over all epochs, {paired:.2f} the median of the "
        f"epoch-by-epoch ratios (target ≥ {TARGET_RATIO}: {met})"
    )

    checkpoints = run.checkpoint_seconds()
    print(
        f"trainer overhead per epoch (median): validation "
        f"{statistics.median(run.validation_seconds()):.3f} s, checkpoint "
        + (f"{statistics.median(checkpoints):.3f} s" if checkpoints else "n/a (one epoch)")
    )
    print(
        f"whole trainer run: {run.total:.1f} s, of which "
        f"{run.total - sum(run.train_seconds()):.1f} s "
        "outside training steps (setup, validation, checkpoints, best-model copies, final "
        "prediction)"
    )


def report_learning(run: Measurements, epochs: int) -> None:
    history = run.result.history
    scores = " ".join(f"{r['val_macro_f1']:.2f}" for r in history)
    print(f"\nval macro-F1 per epoch: {scores}")
    reached = next((r for r in history if r["val_macro_f1"] >= TARGET_F1), None)
    if reached is None:
        print(
            f"macro-F1 {TARGET_F1:.2f}: not reached in {epochs} epochs "
            f"(best {run.result.best_val_macro_f1:.3f} at epoch {run.result.best_epoch})"
        )
        return
    epoch = int(reached["epoch"])
    seconds = run.checkpointed[epoch - 1]
    print(
        f"macro-F1 {TARGET_F1:.2f}: reached at epoch {epoch}, {seconds:.1f} s after train() was "
        f"called (val macro-F1 {reached['val_macro_f1']:.3f}; best "
        f"{run.result.best_val_macro_f1:.3f} at epoch {run.result.best_epoch})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    config = TrainConfig(
        backbone="tiny",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=LEARNING_RATE,
        patience=args.epochs,  # never stops early: both loops run every epoch
        seed=SEED,
        input_size=args.input_size,
        num_workers=args.workers,
        device=device,
    )

    started = time.perf_counter()
    train_items, val_items, train_patients, val_patients = phantom(args.patients)
    print(
        f"phantom ({', '.join(PROFILES)}): {len(train_items)} train images of {train_patients} "
        f"patients, {len(val_items)} val images of {val_patients} other patients "
        f"(drawn in {time.perf_counter() - started:.1f} s)"
    )
    name = torch.cuda.get_device_name() if device == "cuda" else f"{CORES} CPU cores"
    print(
        f"tiny at {args.input_size} px, batch {args.batch_size}, {args.epochs} epochs, "
        f"{args.workers} DataLoader workers; {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads"
    )

    # One short epoch first, so that neither measured loop pays for thread pools, CUDA
    # context or kernel selection warming up.
    PlainLoop(config, train_items[: 4 * args.batch_size]).epoch(0)
    run = measure(config, train_items, val_items)
    report_throughput(run)
    report_learning(run, args.epochs)


if __name__ == "__main__":
    main()
