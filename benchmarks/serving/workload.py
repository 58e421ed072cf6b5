"""What every contender serves: one trainer-built archive and the same phantom images.

A ResNet-18 at 224 px with random weights, packaged by the trainer's own code: latency does not
depend on the weights. The images are canonical 256-pixel PNGs, what the anonymizer hands on in
production.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import torch

from fetalmlops.archive.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.archive.preprocessing import Preprocessing
from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.dataset import ImageSpec, plan, sector_png
from fetalmlops.trainer.backbones import Strategy, backbone, build

SEED = 2026
CLASSES = [p.value for p in Plane]
NAME, VERSION = "fetal-planes", 1
BACKBONE, INPUT_SIZE = "resnet18", 224
CANONICAL_SIDE = 256  # the anonymizer's canonical PNG


def canonical_png(spec: ImageSpec) -> bytes:
    return sector_png(spec, SEED, CANONICAL_SIDE)


def phantom_pngs(count: int) -> list[bytes]:
    return [canonical_png(spec) for spec in plan(count, SEED)[:count]]  # several per patient


def model_version(root: Path) -> ModelLayout:
    """The trainer's archive of a randomly initialised ResNet-18, as `job.py` packages one."""
    torch.manual_seed(SEED)
    spec = backbone(BACKBONE)
    model = build(BACKBONE, len(CLASSES), Strategy.FINE_TUNE).eval()
    prep = Preprocessing(size=INPUT_SIZE)
    torchscript = export_torchscript(
        model,
        torch.zeros(2, prep.channels, prep.size, prep.size),
        root / "model.pt",
        head=spec.head,
        features=spec.features,
    )
    return build_mar(NAME, VERSION, torchscript, prep, CLASSES, root / f"v{VERSION}")


def archived_model(layout: ModelLayout) -> torch.jit.ScriptModule:
    with zipfile.ZipFile(layout.mar) as archive:
        data = archive.read("model.pt")
    with warnings.catch_warnings():
        # Deprecated for torch.export, yet what TorchServe 0.12 and our service both load.
        warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
        model: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    return model.eval()


def probabilities(model: torch.jit.ScriptModule, batch: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        row = torch.softmax(model(batch).float(), dim=1)[0]
    return dict(zip(CLASSES, row.tolist(), strict=True))
