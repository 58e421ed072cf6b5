"""A real model version for the inference tests: a tiny CNN archived by the trainer's own code.

The service never imports the trainer; its tests may, to get exactly the `.mar` the trainer
publishes (torch-model-archiver runs, about two seconds).
"""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.dataset import draw, plan
from fetalmlops.trainer.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.trainer.preprocessing import Preprocessing, decode

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


@pytest.fixture(scope="session")
def pngs() -> list[bytes]:
    """Phantom ultrasound frames of different planes and sizes, PNG-encoded."""
    images = []
    for spec in plan(2, seed=11)[:4]:
        buffer = io.BytesIO()
        Image.fromarray(draw(spec, 11, difficulty=0.5, banner=False).pixels).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


@dataclass(frozen=True)
class TorchServeWorker:
    handler: ModuleType
    classifier: Any  # the archive's handler.PlaneClassifier, loaded


@pytest.fixture(scope="session")
def torchserve(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> TorchServeWorker:
    """The archive's handler imported as a TorchServe worker does: top-level, its folder on
    sys.path. Independent of the service's own unpacking: what the service must answer."""
    model_dir = tmp_path_factory.mktemp("torchserve-worker")
    with zipfile.ZipFile(layout.mar) as archive:
        archive.extractall(model_dir)
    sys.path.insert(0, str(model_dir))
    try:
        spec = importlib.util.spec_from_file_location("handler", model_dir / "handler.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        # At once, not at the session's end: other test files import their own top-level
        # `preprocessing` the same way.
        sys.path.remove(str(model_dir))
        sys.modules.pop("preprocessing", None)
    return TorchServeWorker(module, module.PlaneClassifier.load(model_dir, torch.device("cpu")))
