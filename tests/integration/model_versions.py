"""Small, real model versions for tests that serve them: a tiny CNN archived by
`fetalmlops.archive`, the builder the trainer packages with.

The inference service never imports that builder; tests do, to get exactly the `.mar` and the
KServe layout the trainer publishes without training anything (torch-model-archiver runs,
about two seconds a version).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from fetalmlops.archive.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.common.planes import Plane
from fetalmlops.common.store import ObjectStore
from fetalmlops.datasets.phantom.dataset import draw, plan

CLASSES = [plane.value for plane in Plane]
PREP = Preprocessing(size=64)
# The tiny CNN's classification head and its last feature map, as the trainer's Backbone says.
HEAD, FEATURES = "7", "4"


def tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASSES)),
    ).eval()  # fmt: skip


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    model: nn.Module
    layout: ModelLayout

    def expected(self, png: bytes) -> np.ndarray:
        """The eager model's probabilities: what a server of this version must answer."""
        with torch.no_grad():
            return torch.softmax(self.model(decode(png, PREP).unsqueeze(0)), 1)[0].numpy()

    def upload(self, store: ObjectStore, bucket: str, prefix: str) -> str:
        """The version's files under ``prefix`` (as the trainer uploads them); its URI."""
        for path in (self.layout.mar, self.layout.config_properties):
            key = prefix + path.relative_to(self.layout.root).as_posix()
            store.put(bucket, key, path.read_bytes())
        return f"s3://{bucket}/{prefix}"


def build_version(root: Path, name: str, number: int, seed: int) -> Version:
    model = tiny_cnn(seed)
    example = torch.randn(1, 3, PREP.size, PREP.size)
    work = root / f"{name}-v{number}"
    torchscript = export_torchscript(
        model, example, work / "model_ts.pt", head=HEAD, features=FEATURES
    )
    layout = build_mar(name, number, torchscript, PREP, CLASSES, work / "version")
    return Version(name, number, model, layout)


def phantom_pngs(count: int, seed: int) -> list[bytes]:
    """Phantom frames without a banner, of several planes, PNG-encoded."""
    images = []
    for spec in plan(count // 3 + 1, seed=seed)[:count]:  # 3 or more images a patient
        buffer = io.BytesIO()
        Image.fromarray(draw(spec, seed, difficulty=0.5, banner=False).pixels).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def same(probabilities: dict[str, float], expected: Sequence[float], atol: float = 1e-5) -> bool:
    served = np.array([probabilities[c] for c in CLASSES])
    return bool(np.allclose(served, np.asarray(expected), atol=atol))
