"""The model zoo: every backbone classifies six planes; a weights file loads whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

from fetalmlops.archive.servable import Servable
from fetalmlops.common.planes import Plane
from fetalmlops.trainer.backbones import (
    BACKBONES,
    Strategy,
    TinyNet,
    build,
    trainable_parameters,
)

CLASSES = len(Plane)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_classifies_six_planes_at_its_input_size(name: str) -> None:
    torch.manual_seed(0)
    spec = BACKBONES[name]
    model = build(name, CLASSES, Strategy.FINE_TUNE).eval()

    head = model.get_submodule(spec.head)
    assert isinstance(head, nn.Linear)
    assert head.out_features == CLASSES
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, spec.input_size, spec.input_size))
    assert logits.shape == (2, CLASSES)
    assert torch.isfinite(logits).all()


# Each backbone's total stride down to its last feature map: 32, or 8 for the tiny network and
# 16 (the patch size) for the transformer. An earlier stage would give a finer map.
LAST_MAP_STRIDE = {"tiny": 8, "vit_b_16": 16}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_shows_grad_cam_its_last_feature_map(name: str) -> None:
    torch.manual_seed(0)
    spec = BACKBONES[name]
    model = build(name, CLASSES, Strategy.FINE_TUNE).eval()
    # Convolutional networks take any side; the transformer's position table wants its own.
    side = spec.input_size if name == "vit_b_16" else 64

    logits, embedding, feature_map = Servable(
        model, spec.head, spec.features
    ).forward_with_features(torch.randn(1, 3, side, side))

    grid = side // LAST_MAP_STRIDE.get(name, 32)
    assert feature_map.dim() == 4 and feature_map.shape[2:] == (grid, grid)
    assert embedding.shape == (1, model.get_submodule(spec.head).in_features)
    (gradient,) = torch.autograd.grad(logits[0, 1], feature_map)
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("side", [64, 224])
def test_the_tiny_network_is_small_and_takes_any_side(side: int) -> None:
    model = build("tiny", CLASSES, Strategy.FINE_TUNE).eval()
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 150_000
    with torch.inference_mode():
        assert model(torch.randn(2, 3, side, side)).shape == (2, CLASSES)


def test_an_unknown_backbone_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet1000'.*resnet18.*vit_b_16"):
        build("resnet1000", CLASSES, Strategy.FINE_TUNE)


def _save(state: object, path: Path) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("wrapping", ["bare", "state_dict", "model+module."])
def test_encoder_weights_come_from_the_file_and_the_head_is_new(
    tmp_path: Path, wrapping: str
) -> None:
    torch.manual_seed(1)
    # What a pretrained checkpoint looks like: an ImageNet head of 1000 classes included.
    source = models.resnet18(weights=None).state_dict()
    wrapped = {
        "bare": source,
        "state_dict": {"state_dict": source, "epoch": 90},
        "model+module.": {"model": {f"module.{k}": v for k, v in source.items()}},
    }[wrapping]

    model = build("resnet18", CLASSES, Strategy.FINE_TUNE, _save(wrapped, tmp_path / "r18.pt"))

    loaded = model.state_dict()
    encoder = [k for k in source if not k.startswith("fc.")]
    assert len(encoder) == len(loaded) - 2
    for key in encoder:
        assert torch.equal(loaded[key], source[key]), key
    assert loaded["fc.weight"].shape == (CLASSES, 512)
    assert not torch.equal(loaded["fc.weight"], source["fc.weight"][:CLASSES])


def test_a_weights_file_of_another_architecture_fails_loudly(tmp_path: Path) -> None:
    resnet34 = _save(models.resnet34(weights=None).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(
        ValueError, match=r"does not fit the resnet18 encoder.*unexpected.*layer1\.2"
    ):
        build("resnet18", CLASSES, Strategy.FINE_TUNE, resnet34)

    mobilenet = _save(models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "mb.pt")
    with pytest.raises(ValueError, match=r"\d+ missing \['conv1\.weight'"):
        build("resnet18", CLASSES, Strategy.FINE_TUNE, mobilenet)

    one_channel = _save(TinyNet(channels=1).state_dict(), tmp_path / "grey.pt")
    with pytest.raises(ValueError, match=r"1 of another shape \['features\.0\.weight"):
        build("tiny", CLASSES, Strategy.FINE_TUNE, one_channel)

    not_a_state_dict = _save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="not a state_dict"):
        build("tiny", CLASSES, Strategy.FINE_TUNE, not_a_state_dict)


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v3_small"])
def test_linear_probing_trains_the_head_alone_and_never_moves_batch_norm(name: str) -> None:
    torch.manual_seed(2)
    model = build(name, CLASSES, Strategy.LINEAR_PROBE)
    head = model.get_submodule(BACKBONES[name].head)

    assert {id(p) for p in trainable_parameters(model)} == {id(p) for p in head.parameters()}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # whoever calls it: the encoder's statistics must not follow the batch
    model(torch.randn(4, 3, 96, 96) * 3 + 1).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(p.grad is not None for p in head.parameters())

    # Its weights are an ordinary state_dict: packaging rebuilds it as a plain network.
    plain = build(name, CLASSES, Strategy.FINE_TUNE)
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(plain.eval()(x), model.eval()(x), atol=1e-5)


def test_a_linear_probe_keeps_the_pretrained_statistics_it_was_given(tmp_path: Path) -> None:
    torch.manual_seed(3)
    pretrained = TinyNet()
    for module in pretrained.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    source = pretrained.state_dict()

    model = build("tiny", CLASSES, Strategy.LINEAR_PROBE, _save(source, tmp_path / "tiny.pt"))

    loaded = model.state_dict()
    for key, value in source.items():
        if not key.startswith("classifier.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], value), key
