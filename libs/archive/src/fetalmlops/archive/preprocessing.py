"""The one preprocessing every model sees, in training, in TorchServe and in KServe.

This module is copied into every `.mar` beside the handler, so it imports only the standard
library, numpy, Pillow and torch: the serving side runs exactly the transform the model was
trained with, read from `preprocessing.json` in the archive rather than re-implemented.

Input is a picture (any mode, any size: the canonical 256-pixel PNG from the anonymizer in
training); output is a float tensor (channels, size, size). Greyscale is replicated to three
channels for backbones whose stem expects RGB.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

FILENAME = "preprocessing.json"


@dataclass(frozen=True)
class Preprocessing:
    size: int = 224
    channels: int = 3
    # Speckle images have a dark background: statistics of the phantom and FETAL_PLANES_DB
    # canonical images, not ImageNet's, which assume natural colour photographs.
    mean: float = 0.20
    std: float = 0.22

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        return cls(**json.loads(text))


def square_greyscale(picture: Image.Image, size: int) -> Image.Image:
    """Luminance, padded to a centred square with black (as the canonical image), resized."""
    grey = picture.convert("L")
    side = max(grey.size)
    if grey.size != (side, side):
        square = Image.new("L", (side, side), 0)
        square.paste(grey, ((side - grey.width) // 2, (side - grey.height) // 2))
        grey = square
    return grey.resize((size, size), Image.Resampling.BILINEAR)


def to_tensor(picture: Image.Image, prep: Preprocessing) -> torch.Tensor:
    grey = np.asarray(square_greyscale(picture, prep.size), dtype=np.float32) / 255.0
    tensor = torch.from_numpy((grey - prep.mean) / prep.std)
    return tensor.unsqueeze(0).expand(prep.channels, -1, -1).contiguous()


def decode(data: bytes, prep: Preprocessing) -> torch.Tensor:
    """PNG or JPEG bytes to the model's input tensor; raises ValueError on anything else."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return to_tensor(picture, prep)
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a PNG or JPEG image: {exc}") from None
