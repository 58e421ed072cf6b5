"""The model zoo: which networks the trainer can fit, and how each becomes a plane classifier.

`BACKBONES` is a table, not a chain of `if`s: per backbone, the function that builds it (always
with `weights=None`: nothing is ever downloaded, pretrained weights come only from a local file),
the dotted path of its classification head, that of its last spatial feature map (what Grad-CAM
reads, see `servable.Servable`), the input size it is meant to run at and the normalisation its
published weights expect. `build` replaces that head with a fresh `nn.Linear(features,
num_classes)` and, given a weights file in the zoo's layout or one `layouts` maps (such as
`efficientnet_pytorch`'s), loads every encoder tensor from it and refuses a file that does not
fit the encoder exactly.

Linear probing freezes the encoder. Freezing its parameters is not enough: a BatchNorm layer in
train mode keeps updating its running statistics from the fine-tuning data even with no
gradient. So `build` swaps every encoder BatchNorm2d for torchvision's `FrozenBatchNorm2d`
(statistics and affine terms as buffers, the same state_dict keys), which no `.train()` call can
unfreeze, whoever drives the loop. Stochastic depth and dropout inside the encoder stay as they
are; they only perturb features, they do not change the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.ops import FrozenBatchNorm2d

from fetalmlops.trainer.efficientnet_lite import LITE_MEAN, LITE_STD, EfficientNetLite
from fetalmlops.trainer.layouts import to_zoo


class Strategy(StrEnum):
    FINE_TUNE = "fine_tune"
    LINEAR_PROBE = "linear_probe"


class TinyNet(nn.Module):
    """Four conv blocks and a linear head (~98k parameters): trains on two CPU cores in seconds.

    Global average pooling makes it indifferent to the input size (64 to 224 and beyond).
    """

    def __init__(self, num_classes: int = 6, channels: int = 3) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(channels, 16, stride=2),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Backbone:
    make: Callable[[], nn.Module]
    head: str  # dotted path of the nn.Linear that classifies
    # Dotted path of the submodule giving the last spatial feature map (N, C, h, w), or a
    # vision transformer's tokens (N, 1 + h*w, C), read from each model's forward.
    features: str
    input_size: int  # the side the network is meant to see (torchvision's evaluation crop)
    # The (mean, std) of the input its published weights were trained on, on [0, 1] greyscale
    # repeated over the channels: used instead of the phantom's when pretrained weights load.
    normalisation: tuple[float, float] | None = None


# ImageNet's per-channel mean and std (torchvision's weights), averaged for a greyscale image.
IMAGENET_GREY = (0.449, 0.226)


# A ViT's last encoder output reaches the head through its class token only, so its patch
# tokens get no gradient: Grad-CAM reads the tokens entering the last block's attention
# instead, where the class token last looks at the patches.
VIT_B_16_LAST_BLOCK = "encoder.layers.encoder_layer_11.ln_1"


def torchvision(
    build: Callable[..., nn.Module], head: str, features: str, size: int = 224
) -> Backbone:
    """A torchvision network, built without weights; its published weights are ImageNet's."""
    return Backbone(lambda: build(weights=None), head, features, size, IMAGENET_GREY)


BACKBONES: Mapping[str, Backbone] = {
    # features.13 is the ReLU closing the last conv block, before the global pooling.
    "tiny": Backbone(TinyNet, "classifier", "features.13", 128),
    "resnet18": torchvision(models.resnet18, "fc", "layer4"),
    "resnet50": torchvision(models.resnet50, "fc", "layer4"),
    "efficientnet_b0": torchvision(models.efficientnet_b0, "classifier.1", "features"),
    "efficientnet_v2_s": torchvision(models.efficientnet_v2_s, "classifier.1", "features", 384),
    "efficientnet_lite0": Backbone(
        EfficientNetLite, "_fc", "_head_activation", 224, (LITE_MEAN, LITE_STD)
    ),
    "mobilenet_v3_small": torchvision(models.mobilenet_v3_small, "classifier.3", "features"),
    "mobilenet_v3_large": torchvision(models.mobilenet_v3_large, "classifier.3", "features"),
    "convnext_tiny": torchvision(models.convnext_tiny, "classifier.2", "features"),
    # The patch embedding's position table is sized for 224 (14 × 14 patches of 16).
    "vit_b_16": torchvision(models.vit_b_16, "heads.head", VIT_B_16_LAST_BLOCK),
}


def backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def build(
    name: str, num_classes: int, strategy: Strategy, weights: Path | None = None
) -> nn.Module:
    """A `name` network with a new `num_classes` head, encoder from `weights` if given."""
    spec = backbone(name)
    model = spec.make()
    old_head = model.get_submodule(spec.head)
    if not isinstance(old_head, nn.Linear):
        raise TypeError(f"{name}: {spec.head} is a {type(old_head).__name__}, not nn.Linear")
    if weights is not None:
        _load_encoder(model, name, spec.head, weights)
    model.set_submodule(spec.head, nn.Linear(old_head.in_features, num_classes))
    if strategy is Strategy.LINEAR_PROBE:
        _freeze_encoder(model, spec.head)
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """A state_dict as saved by `torch.save`, bare or under "state_dict"/"model", DDP-prefixed
    or not; `weights_only` so that a weights file cannot run code."""
    loaded = torch.load(weights, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ValueError(f"{weights}: not a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _load_encoder(model: nn.Module, name: str, head: str, weights: Path) -> None:
    """Every encoder tensor from the file, in any layout `layouts` maps onto ``name``, or a
    ValueError: no silent half-loading."""

    def is_head(key: str) -> bool:
        return key.startswith(f"{head}.")

    state = model.state_dict()
    try:
        renamed, layout = to_zoo(_read_state_dict(weights), name, list(state))
    except ValueError as exc:
        raise ValueError(f"{weights}: {exc}") from None
    given = {k: v for k, v in renamed.items() if not is_head(k)}
    expected = {k: v for k, v in state.items() if not is_head(k)}
    # A BatchNorm step counter is not a weight, and frozen (linear-probe) models carry none.
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    misshapen = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if missing or unexpected or misshapen:
        raise ValueError(
            f"{weights} ({layout} layout) does not fit the {name} encoder (another "
            f"architecture?): "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected "
            f"{unexpected[:5]}, {len(misshapen)} of another shape {misshapen[:5]}"
        )
    model.load_state_dict(given, strict=False)


def _freeze_encoder(model: nn.Module, head: str) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in model.get_submodule(head).parameters():
        parameter.requires_grad_(True)
    batch_norms = [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, nn.BatchNorm2d) and not path.startswith(f"{head}.")
    ]
    for path, norm in batch_norms:
        frozen = FrozenBatchNorm2d(norm.num_features, eps=norm.eps)
        if norm.affine:
            frozen.weight.copy_(norm.weight.detach())
            frozen.bias.copy_(norm.bias.detach())
        if norm.running_mean is not None and norm.running_var is not None:
            frozen.running_mean.copy_(norm.running_mean)
            frozen.running_var.copy_(norm.running_var)
        model.set_submodule(path, frozen)
