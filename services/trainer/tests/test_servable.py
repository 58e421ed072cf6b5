"""The exported model shows what drift monitoring and Grad-CAM read, and SHAP gets a background.

Each export is read back from the saved file, as the inference service does: the second method's
logits are the served ones, its embedding is exactly what the drift reference was computed
from, and a class score differentiates down to its feature map.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

from fetalmlops.archive.packaging import export_torchscript
from fetalmlops.archive.servable import (
    Calibrated,
    Servable,
    background_indices,
    patch_grid,
    with_patch_grid,
)
from fetalmlops.common.planes import Plane
from fetalmlops.trainer import reference
from fetalmlops.trainer.backbones import BACKBONES, Strategy, build

CLASSES = len(Plane)
# Small inputs keep each export to a second or two; the paths are those of the real backbones.
SIDE = {"tiny": 64, "resnet18": 64, "efficientnet_b0": 64, "efficientnet_lite0": 64, "vit_b_16": 32}
# Channels and side of the last feature map at those sides (ViT: 32 / 16 = 2 patches a side).
FEATURE_MAP = {
    "tiny": (128, 8),
    "resnet18": (512, 2),
    "efficientnet_b0": (1280, 2),
    "efficientnet_lite0": (1280, 2),
    "vit_b_16": (768, 2),
}


def small(name: str, strategy: Strategy) -> nn.Module:
    torch.manual_seed(0)
    if name != "vit_b_16":
        return build(name, CLASSES, strategy).eval()
    # vit_b_16 itself, but its position table sized for a 2 × 2 grid of patches.
    model: nn.Module = models.vit_b_16(weights=None, image_size=SIDE[name])
    model.set_submodule("heads.head", nn.Linear(768, CLASSES))
    return model.eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
# A ViT's grid, like its position table, is fixed by its image size, and so is Lite's "SAME"
# padding: tracing says it saw a constant.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize(
    ("name", "strategy"),
    [
        ("tiny", Strategy.FINE_TUNE),
        # A frozen encoder: its parameters need no gradient, Grad-CAM's feature map still does.
        ("tiny", Strategy.LINEAR_PROBE),
        ("resnet18", Strategy.FINE_TUNE),
        ("efficientnet_b0", Strategy.FINE_TUNE),
        ("efficientnet_lite0", Strategy.LINEAR_PROBE),
        ("vit_b_16", Strategy.FINE_TUNE),
    ],
)
def test_the_saved_file_gives_logits_embedding_and_a_differentiable_feature_map(
    name: str, strategy: Strategy, tmp_path: Path
) -> None:
    spec, side = BACKBONES[name], SIDE[name]
    model = small(name, strategy)
    served = Calibrated(model, temperature=1.7)
    path = export_torchscript(
        served,
        torch.randn(2, 3, side, side),
        tmp_path / "model.pt",
        head=f"model.{spec.head}",
        features=f"model.{spec.features}",
    )
    loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    images = torch.randn(3, 3, side, side)

    logits, embedding, feature_map = loaded.forward_with_features(images)

    with torch.no_grad():
        torch.testing.assert_close(logits, loaded(images), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(logits, served(images), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(
        embedding.detach().numpy(),
        reference.embeddings(model, spec.head, [images]),
        atol=1e-5,
        rtol=1e-4,
    )
    channels, grid = FEATURE_MAP[name]
    assert feature_map.shape == (3, channels, grid, grid)
    (gradient,) = torch.autograd.grad(logits[:, 2].sum(), feature_map)
    assert gradient.abs().sum() > 0


def test_a_vit_grid_is_its_patch_tokens_and_gives_them_back_unchanged() -> None:
    tokens = torch.randn(2, 1 + 3 * 3, 5)
    grid = patch_grid(tokens)
    assert grid.shape == (2, 5, 3, 3)
    # Patch (row 1, column 2) is token 1 + 1 * 3 + 2.
    torch.testing.assert_close(grid[:, :, 1, 2], tokens[:, 1 + 5])
    assert torch.equal(with_patch_grid(tokens, grid), tokens)
    with pytest.raises(ValueError, match="square grid"):
        patch_grid(torch.randn(2, 1 + 6, 5))


def test_the_last_encoder_output_of_a_vit_would_leave_grad_cam_blind() -> None:
    # Why vit_b_16's features are the last block's input, not the encoder's output: only the
    # class token of the output reaches the head.
    model = small("vit_b_16", Strategy.FINE_TUNE)
    images = torch.randn(1, 3, 32, 32)
    for features, blind in (("encoder", True), (BACKBONES["vit_b_16"].features, False)):
        logits, _, feature_map = Servable(model, "heads.head", features).forward_with_features(
            images
        )
        (gradient,) = torch.autograd.grad(logits[:, 0].sum(), feature_map)
        assert bool((gradient == 0).all()) is blind, features


def test_a_servable_refuses_a_head_that_is_not_linear() -> None:
    with pytest.raises(TypeError, match=r"not the nn\.Linear head"):
        Servable(small("tiny", Strategy.FINE_TUNE), "features", "features.13")
    with pytest.raises(AttributeError):
        Servable(small("tiny", Strategy.FINE_TUNE), "classifier", "features.99")


def test_the_background_takes_every_class_in_turn() -> None:
    labels = [c for c in range(6) for _ in range(10)]
    chosen = background_indices(labels, 16, seed=0)
    counts = Counter(labels[i] for i in chosen)
    assert len(chosen) == len(set(chosen)) == 16 and chosen == sorted(chosen)
    assert set(counts) == set(range(6)) and max(counts.values()) - min(counts.values()) <= 1
    assert background_indices(labels, 16, seed=0) == chosen
    assert background_indices(labels, 16, seed=1) != chosen


def test_a_scarce_class_gives_all_it_has_and_a_small_split_gives_everything() -> None:
    labels = [0] + [1] * 30 + [4] * 2
    counts = Counter(labels[i] for i in background_indices(labels, 16, seed=3))
    assert counts == {0: 1, 1: 13, 4: 2}
    assert background_indices(labels[:5], 16, seed=3) == [0, 1, 2, 3, 4]
