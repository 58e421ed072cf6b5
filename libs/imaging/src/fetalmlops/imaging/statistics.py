"""Per-image statistics and the embedding projection: a contract between three services.

The trainer's drift reference, the inference service's prediction events and the monitor must
compute these identically, or the monitor reports as drift what is only a difference of
arithmetic. Each is therefore defined precisely enough to be recomputed without this package:
`per_image_statistics` on the square greyscale picture a model is given (before its
normalisation), and `random_projection` from `PROJECTION_RECIPE` alone, in any language.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Below 5 % of full scale: the black surround of the imaging sector and anechoic fluid. Gain,
# depth and sector width move this share well before they move the mean brightness much.
DARK_LEVEL = 0.05
PROJECTION_RECIPE = (
    "x @ R, R[i, j] = (+1 if bit j of sha256(f'{seed}:{i}'.encode()) is 0 else -1) / "
    "sqrt(out_dim), bits numbered from the most significant bit of the first byte"
)
SHA256_BITS = 256
# Embeddings wider than this are projected: a two-sample test in 512 or 2048 dimensions from a
# few hundred rows has little power, and events and references would weigh kilobytes a row.
MAX_SAMPLED_DIM = 64
PROJECTED_DIM = 32
PROJECTION_SEED = 0
# Side of the square greyscale thumbnail image statistics are computed on: speckle contrast
# depends on the resolution it is measured at, so producers must all measure at this one.
STATISTICS_SIZE = 64


def per_image_statistics(pixels: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
    """Per image of ``pixels`` (n, h, w), named as a prediction event's ``ImageStatistics``:
    ``mean``, ``std``, ``p05``, ``p95``, ``dark_fraction``.

    Pixels are greyscale, uint8 (divided by 255) or float in [0, 1]: the square greyscale
    picture of `fetalmlops.archive.preprocessing.square_greyscale`, before the model's
    normalisation, which is what the inference service has decoded too. ``mean`` is the mean
    level (brightness), ``std`` the (population) standard deviation of the levels (contrast),
    ``p05`` and ``p95`` their 5th and 95th percentiles (numpy's linear interpolation), and
    ``dark_fraction`` the share of pixels strictly below `DARK_LEVEL`.
    """
    levels = _levels(pixels).reshape(len(pixels), -1)
    p05, p95 = np.percentile(levels, (5, 95), axis=1)
    return {
        "mean": levels.mean(axis=1),
        "std": levels.std(axis=1),
        "p05": p05,
        "p95": p95,
        "dark_fraction": (levels < DARK_LEVEL).mean(axis=1),
    }


@functools.lru_cache(maxsize=8)
def random_projection(in_dim: int, out_dim: int, seed: int) -> NDArray[np.float64]:
    """A fixed (in_dim, out_dim) random sign matrix scaled by 1/sqrt(out_dim), read-only.

    A Johnson–Lindenstrauss projection (Achlioptas 2003): distances between rows are kept
    within a small factor. Its signs come from SHA-256 rather than a numpy generator, whose
    streams numpy does not promise to keep across versions, so the inference service and the
    monitor can rebuild it from `PROJECTION_RECIPE` alone, in any language. Cached: the
    inference service projects every prediction's embedding with the same matrix.
    """
    if in_dim < 1 or not 1 <= out_dim <= SHA256_BITS:
        raise ValueError(f"need in_dim >= 1 and 1 <= out_dim <= 256, got {in_dim}, {out_dim}")
    digests = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(in_dim))
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8)).reshape(in_dim, SHA256_BITS)
    signs = 1.0 - 2.0 * bits[:, :out_dim].astype(np.float64)
    matrix = signs / math.sqrt(out_dim)
    matrix.setflags(write=False)  # shared by every caller through the cache
    return matrix


def _levels(pixels: NDArray[Any]) -> NDArray[np.float64]:
    array = np.asarray(pixels)
    if array.ndim != 3 or array.shape[0] == 0 or array.size == 0:
        raise ValueError(f"pixels must be (n >= 1, h, w) greyscale images, got {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"pixels must be uint8 or float in [0, 1], got {array.dtype}")
    levels = array.astype(np.float64)
    if not np.isfinite(levels).all() or levels.min() < 0 or levels.max() > 1:
        raise ValueError("float pixels must lie in [0, 1]")
    return levels


def projected(embeddings: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Rows of (n, dim) ``embeddings`` as drift tests compare them: as they are when at most
    `MAX_SAMPLED_DIM` wide, else through `random_projection` to `PROJECTED_DIM` with
    `PROJECTION_SEED`."""
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be (n, dim), got {matrix.shape}")
    if matrix.shape[1] <= MAX_SAMPLED_DIM:
        return matrix
    return matrix @ random_projection(matrix.shape[1], PROJECTED_DIM, PROJECTION_SEED)
