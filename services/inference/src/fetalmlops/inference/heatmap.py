"""Explanation heatmaps as pictures a person reads: a colour-mapped PNG over the scan itself.

The colour tables are nine anchors sampled from matplotlib's ``inferno`` (sequential, for
Grad-CAM's evidence from 0 to 1) and ``RdBu_r`` (diverging, for SHAP's signed attributions:
blue against the class, white neutral, red for it), interpolated here so the service carries
no plotting library. Both are perceptually ordered, so a brighter (or redder) region does mean
more.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

INFERNO = np.array(
    [
        (0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84),
        (228, 90, 49), (249, 142, 9), (249, 203, 53), (252, 255, 164),
    ],
    dtype=np.float64,
) / 255  # fmt: skip
RDBU_R = np.array(
    [
        (5, 48, 97), (42, 113, 178), (107, 172, 209), (194, 221, 236), (247, 246, 246),
        (251, 204, 180), (228, 128, 102), (186, 40, 50), (103, 0, 31),
    ],
    dtype=np.float64,
) / 255  # fmt: skip
# The heat never hides the scan completely: a sonographer checks it against the anatomy.
OPACITY = 0.6


def colour(values: NDArray[Any], anchors: NDArray[np.float64]) -> NDArray[np.float64]:
    """``values`` in [0, 1] as RGB in [0, 1] (a trailing axis of 3), interpolating ``anchors``."""
    positions = np.linspace(0.0, 1.0, len(anchors))
    clipped = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(clipped, positions, anchors[:, c]) for c in range(3)], axis=-1)


def greyscale_picture(image: NDArray[Any], mean: float, std: float) -> NDArray[np.float64]:
    """The picture the model saw, (H, W) in [0, 1], from one model input (C, H, W).

    Undoes the archive's normalisation (``x * std + mean``); the channels are copies of one
    greyscale plane, so the first is the picture.
    """
    plane: NDArray[np.float64] = np.asarray(image, dtype=np.float64)[0]
    return np.clip(plane * std + mean, 0.0, 1.0)


def heatmap_png(
    heatmap: NDArray[Any], picture: NDArray[Any] | None = None, *, signed: bool = False
) -> bytes:
    """An RGB PNG of ``heatmap`` (H, W), blended over ``picture`` (H, W, in [0, 1]) if given.

    Unsigned maps are read in [0, 1] (Grad-CAM's range). Signed maps (SHAP) are scaled by their
    largest magnitude, so zero is always white and the strongest attribution saturates.
    Over a picture, the heat is as opaque as it is strong: where it is weak, the scan shows.
    """
    values = np.asarray(heatmap, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"a heatmap is (height, width), not of shape {values.shape}")
    if signed:
        largest = float(np.abs(values).max(initial=0.0))
        scaled = values / largest if largest > 0 else np.zeros_like(values)
        strength = np.abs(scaled)
        rgb = colour(0.5 + 0.5 * scaled, RDBU_R)
    else:
        strength = np.clip(values, 0.0, 1.0)
        rgb = colour(strength, INFERNO)
    if picture is not None:
        grey = np.clip(np.asarray(picture, dtype=np.float64), 0.0, 1.0)
        if grey.shape != values.shape:
            raise ValueError(f"picture {grey.shape} and heatmap {values.shape} differ in size")
        alpha = OPACITY * strength[..., None]
        rgb = alpha * rgb + (1 - alpha) * grey[..., None]
    pixels = np.round(rgb * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
