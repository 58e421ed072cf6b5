"""A real model version for the inference tests: a tiny CNN archived by `fetalmlops.archive`.

The service imports neither the trainer nor that builder; its tests use the builder the trainer
packages with, to get exactly the `.mar` the trainer publishes without training anything
(torch-model-archiver runs, about two seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fetalmlops.archive.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.archive.worker import worker_handler
from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.samples import plane_pictures

CLASSES = [plane.value for plane in Plane]
NAME, VERSION, SIZE = "fetal-planes", 4, 64
HEAD, FEATURES = "7", "4"  # tiny_cnn's Linear, and the ReLU after its last convolution


def tiny_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASSES)),
    ).eval()  # fmt: skip


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory, pngs: list[bytes]) -> ModelLayout:
    """``<root>/model-store/fetal-planes.mar`` + ``<root>/config/config.properties``.

    Its TorchScript has ``forward_with_features`` (embedding: the Linear's input; feature map:
    the last ReLU's output) and it carries the phantom frames of `pngs` as SHAP's background.
    """
    root = tmp_path_factory.mktemp("version")
    example = torch.randn(1, 3, SIZE, SIZE)
    prep = Preprocessing(size=SIZE)
    torchscript = export_torchscript(
        tiny_cnn(), example, root / "work" / "model_ts.pt", head=HEAD, features=FEATURES
    )
    background = np.stack([decode(png, prep).numpy() for png in pngs])
    return build_mar(NAME, VERSION, torchscript, prep, CLASSES, root / "v4", background=background)


def other_version(root: Path, version: int, size: int = SIZE, shift: float = 0.5) -> ModelLayout:
    """Version ``version`` of the same model: the tiny CNN, its weights shifted by ``shift``,
    preprocessed to ``size`` pixels."""
    model = tiny_cnn()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(shift)
    example = torch.randn(1, 3, size, size)
    torchscript = export_torchscript(model, example, root / "ts.pt", head=HEAD, features=FEATURES)
    return build_mar(NAME, version, torchscript, Preprocessing(size=size), CLASSES, root / "v")


@pytest.fixture(scope="session")
def second(tmp_path_factory: pytest.TempPathFactory) -> ModelLayout:
    """Version 5 of the same model, other weights, the same preprocessing: a challenger."""
    return other_version(tmp_path_factory.mktemp("second"), 5)


@pytest.fixture(scope="session")
def resized(tmp_path_factory: pytest.TempPathFactory) -> ModelLayout:
    """Version 6, preprocessed to 48 pixels: a challenger that decodes a request otherwise."""
    return other_version(tmp_path_factory.mktemp("resized"), 6, size=48, shift=-0.3)


@pytest.fixture(scope="session")
def pngs() -> list[bytes]:
    """Phantom ultrasound frames of different planes and sizes, PNG-encoded."""
    return plane_pictures(4)


@dataclass(frozen=True)
class TorchServeWorker:
    handler: ModuleType
    classifier: Any  # the archive's handler.PlaneClassifier, loaded


@pytest.fixture(scope="session")
def torchserve(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> TorchServeWorker:
    """The archive's handler imported as a TorchServe worker does: top-level, its folder on
    sys.path. Independent of the service's own unpacking: what the service must answer."""
    model_dir = tmp_path_factory.mktemp("torchserve-worker")
    module = worker_handler(layout.mar, model_dir)
    return TorchServeWorker(module, module.PlaneClassifier.load(model_dir, torch.device("cpu")))
