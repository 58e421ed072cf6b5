"""Labelled images as tensors: decoding, ultrasound augmentation and class balance.

An item is `(load, class_index)` where `load()` returns PNG or JPEG bytes: `path.read_bytes`
for a file, or a closure over an object-store key. Decoding goes through
`fetalmlops.archive.preprocessing`, so an image without augmentation becomes exactly the tensor
that TorchServe and KServe compute for it; augmentation acts on the square greyscale picture
before `to_tensor`.

Augmentation is deterministic per (seed, epoch, image index), not per worker: each image draws
from its own generator, so the same run gives the same tensors whatever `num_workers` is and
whichever worker happens to load an image. The training loop calls `set_epoch` before each epoch
(as with `DistributedSampler`).

Imbalance: the default is a class-weighted loss (`class_weights`), which keeps every image in
every epoch and a fixed epoch length; `balanced_sampler` oversamples rare classes instead, for
callers that prefer it. Use one, never both (they would correct twice).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler

from fetalmlops.archive.preprocessing import Preprocessing, square_greyscale, to_tensor

Loader = Callable[[], bytes]
Item = tuple[Loader, int]


@dataclass(frozen=True)
class Augmentation:
    """Plausible variation between ultrasound acquisitions; each field says why it is there.

    No vertical flip, ever: the transducer sits at the top of the sector, and an upside-down
    fan is not an image any scanner produces.
    """

    # The sonographer's hand tilts the probe a little; the standard plane is the same.
    rotation_degrees: float = 10.0
    # Depth and zoom settings differ between exams: the anatomy fills more or less of the fan.
    crop_scale: tuple[float, float] = (0.85, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    # Left-right depends on which way the probe marker faces; the plane's class does not.
    horizontal_flip: bool = True
    # Overall gain and the display's contrast are set by the operator, per machine and patient.
    brightness: float = 0.15
    contrast: float = 0.15
    # The display map (and a scanner's greyscale curve) differs between vendors and presets.
    gamma: tuple[float, float] = (0.8, 1.25)
    # Speckle is multiplicative: its grain varies with the probe frequency and the tissue.
    speckle: float = 0.08

    def __call__(self, picture: Image.Image, generator: torch.Generator) -> Image.Image:
        """A greyscale picture, varied; the same generator state gives the same picture."""

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * float(torch.rand((), generator=generator))

        size = picture.size
        picture = picture.convert("L")
        picture = picture.rotate(
            uniform(-self.rotation_degrees, self.rotation_degrees),
            resample=Image.Resampling.BILINEAR,
            fillcolor=0,
        )
        area = uniform(*self.crop_scale) * size[0] * size[1]
        ratio = math.exp(uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])))
        width = min(size[0], round(math.sqrt(area * ratio)))
        height = min(size[1], round(math.sqrt(area / ratio)))
        left = round(uniform(0, size[0] - width))
        top = round(uniform(0, size[1] - height))
        picture = picture.resize(
            size, Image.Resampling.BILINEAR, box=(left, top, left + width, top + height)
        )
        if self.horizontal_flip and uniform(0, 1) < 0.5:
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

        pixels = np.asarray(picture, dtype=np.float32) / 255.0
        pixels = pixels * uniform(1 - self.brightness, 1 + self.brightness)
        mean = float(pixels.mean())
        pixels = (pixels - mean) * uniform(1 - self.contrast, 1 + self.contrast) + mean
        pixels = np.clip(pixels, 0.0, 1.0) ** math.exp(
            uniform(math.log(self.gamma[0]), math.log(self.gamma[1]))
        )
        noise = torch.randn(pixels.shape, generator=generator).numpy()
        pixels = pixels * (1.0 + self.speckle * noise)
        return Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


class LabelledImages(Dataset[tuple[torch.Tensor, int]]):
    """`(tensor, class_index)` pairs; augmented when an `Augmentation` is given."""

    def __init__(
        self,
        items: Sequence[Item],
        prep: Preprocessing,
        augment: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        self.items = items
        self.prep = prep
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        load, label = self.items[index]
        try:
            with Image.open(io.BytesIO(load())) as picture:
                picture.load()
                if self.augment is None:
                    return to_tensor(picture, self.prep), label
                square = square_greyscale(picture, self.prep.size)
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"item {index}: not a PNG or JPEG image: {exc}") from None
        varied = self.augment(square, self._generator(index))
        return to_tensor(varied, self.prep), label

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, index))


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed mixed from several integers (numpy's SeedSequence: no two tuples collide
    the way `seed + epoch` would)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: torch seeds each worker from the loader's generator; numpy's
    and Python's global generators, which a third-party transform might use, follow it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def labels_of(items: Sequence[Item]) -> NDArray[np.int64]:
    return np.array([label for _, label in items], dtype=np.int64)


def class_weights(labels: Sequence[int] | NDArray[np.integer], num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so that the average weight per image is 1.

    A class with no image gets weight 0 rather than an infinite inverse: no target is of that
    class, and the share that label smoothing spreads onto it then costs nothing.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if counts.shape[0] != num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def balanced_sampler(
    labels: Sequence[int] | NDArray[np.integer], num_classes: int, generator: torch.Generator
) -> WeightedRandomSampler:
    """Draws images so that every present class is equally likely in each epoch."""
    per_class = class_weights(labels, num_classes)
    per_image = per_class[torch.as_tensor(np.asarray(labels, dtype=np.int64))]
    return WeightedRandomSampler(
        per_image.tolist(), num_samples=len(per_image), replacement=True, generator=generator
    )
