"""The served model, and what it shows besides its logits: for drift, Grad-CAM and SHAP.

* `Calibrated` is the network as served: logits over the temperature fitted on validation.
* `Servable` is the module traced into the archive's TorchScript. Its ``forward`` gives the
  logits (what TorchServe calls); `FEATURES_METHOD` gives, from the same pass, the logits, the
  *embedding* (the input of the classification head, flattened: what the drift reference of
  `fetalmlops.trainer.reference.embeddings` summarises, so live traffic is measured the same
  way) and the *feature map* (N, C, h, w) that Grad-CAM weighs by its gradient.
* `background_indices` picks the validation images that SHAP's expectations are taken over.

A vision transformer has no feature map: its layers carry tokens (N, 1 + h*w, C). The class
token is dropped and the patch tokens laid back on their h × w grid, the usual Grad-CAM
reshape for ViT. The reshaped map is also fed back into the network in place of the tokens
(same values), so that the logits are a function of the map itself and
``torch.autograd.grad(logits[:, c].sum(), feature_map)`` reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fetalmlops.archive.handler import FEATURES_METHOD

__all__ = ["FEATURES_METHOD", "Calibrated", "Servable", "background_indices"]


class Calibrated(nn.Module):
    """The served model: logits divided by the temperature fitted on validation, so the
    handler's softmax gives calibrated probabilities (Guo et al. 2017).

    The network is the submodule ``model``: its head is at ``model.<head>`` here.
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    temperature: torch.Tensor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(images)
        return logits / self.temperature


class Servable(nn.Module):
    """``model`` with its embedding and feature map in view.

    ``head`` is the dotted path of the ``nn.Linear`` that classifies, ``features`` that of the
    submodule whose output is the last spatial feature map (or a ViT's tokens), both relative
    to ``model``. They are read by hooks that live only for one call of `forward_with_features`,
    so ``forward`` is ``model``'s own forward, untouched.
    """

    def __init__(self, model: nn.Module, head: str, features: str) -> None:
        super().__init__()
        classifier = model.get_submodule(head)
        if not isinstance(classifier, nn.Linear):
            raise TypeError(f"{head} is a {type(classifier).__name__}, not the nn.Linear head")
        model.get_submodule(features)
        self.model = model
        self.head_path = head
        self.features_path = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(images)
        return logits

    def forward_with_features(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (N, K), embedding (N, D), feature map (N, C, h, w)) of one forward pass."""
        seen: dict[str, torch.Tensor] = {}

        def keep_embedding(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            seen["embedding"] = inputs[0].flatten(1)

        def keep_feature_map(
            _module: nn.Module, _inputs: tuple[Any, ...], output: Any
        ) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{self.features_path} gives a {type(output).__name__}")
            if output.dim() == 4:
                seen["feature_map"] = output
                return None
            if output.dim() != 3:
                raise ValueError(
                    f"{self.features_path} gives a {output.dim()}-dimensional output, neither a "
                    "feature map (N, C, h, w) nor a transformer's tokens (N, 1 + h*w, C)"
                )
            seen["feature_map"] = patch_grid(output)
            return with_patch_grid(output, seen["feature_map"])

        hooks = [
            self.model.get_submodule(self.head_path).register_forward_pre_hook(keep_embedding),
            self.model.get_submodule(self.features_path).register_forward_hook(keep_feature_map),
        ]
        try:
            logits: torch.Tensor = self.model(images)
        finally:
            for hook in hooks:
                hook.remove()
        return logits, seen["embedding"], seen["feature_map"]


def patch_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (N, 1 + h*w, C), class token first, as the patch map (N, C, h, w), h == w."""
    if tokens.dim() != 3:
        raise ValueError(f"expected tokens (N, 1 + h*w, C), got shape {tuple(tokens.shape)}")
    patches = int(tokens.shape[1]) - 1
    side = math.isqrt(max(patches, 0))
    if patches < 1 or side * side != patches:
        raise ValueError(f"{patches} patch tokens do not form a square grid")
    grid: torch.Tensor = tokens[:, 1:].transpose(1, 2).reshape(-1, tokens.shape[2], side, side)
    return grid


def with_patch_grid(tokens: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``tokens`` with its patch tokens read back from ``grid`` (the inverse of `patch_grid`)."""
    return torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


def background_indices(labels: Sequence[int], size: int, seed: int) -> list[int]:
    """At most ``size`` indices into ``labels``, spread over the classes as evenly as they allow.

    Classes take turns, each giving its next image in a seeded random order; a class that has
    run out leaves its turns to the others, and when a round cannot be completed the classes
    served are drawn at random. Returned sorted.
    """
    if size < 1:
        raise ValueError(f"a background needs at least one image, not {size}")
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    queues = [
        [int(i) for i in rng.permutation([i for i, c in enumerate(labels) if c == label])]
        for label in classes
    ]
    chosen: list[int] = []
    for turn in range(max((len(queue) for queue in queues), default=0)):
        waiting = [queue[turn] for queue in queues if turn < len(queue)]
        if len(chosen) + len(waiting) > size:
            waiting = [int(i) for i in rng.choice(waiting, size - len(chosen), replace=False)]
        chosen += waiting
        if len(chosen) == size:
            break
    return sorted(chosen)
