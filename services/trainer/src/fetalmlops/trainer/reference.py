"""The drift reference: what production traffic should look like, measured on a held-out split.

The monitor compares windows of live predictions with these statistics, one family per way a
model's world can shift (DESIGN.md, monitor):

* prediction drift: the predicted-class distribution (`class_prior`), beside the true-label
  distribution (`label_prior`) it should track when the model is right;
* confidence drift: a histogram of the top-class probability on fixed bins, and its mean;
* input drift: per-image brightness, contrast and share of dark pixels (`image_statistics`),
  which move with the scanner, its preset, gain and depth before any label is known;
* representation drift: the input of the classification head (`embeddings`), summarised per
  dimension and kept as a seeded sample of rows for a two-sample test.

Everything here is a pure function of arrays, and a `DriftReference` is plain JSON (it is stored
in the model registry's ``drift_reference`` column). The statistics the inference side must
compute on live images are defined precisely enough to be recomputed without this package:
`per_image_statistics` for the images and `random_projection` for embeddings wider than
`MAX_SAMPLED_DIM`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

CONFIDENCE_BINS = 20
QUANTILES = (5, 25, 50, 75, 95)
# Below 5 % of full scale: the black surround of the imaging sector and anechoic fluid. Gain,
# depth and sector width move this share well before they move the mean brightness much.
DARK_LEVEL = 0.05
# Sample rows wider than this are projected: a two-sample test in 512 or 2048 dimensions from a
# few hundred rows has little power, and the JSON would weigh megabytes.
MAX_SAMPLED_DIM = 64
PROJECTED_DIM = 32
PROJECTION_RECIPE = (
    "x @ R, R[i, j] = (+1 if bit j of sha256(f'{seed}:{i}'.encode()) is 0 else -1) / "
    "sqrt(out_dim), bits numbered from the most significant bit of the first byte"
)
ROW_SUM_TOLERANCE = 1e-3
SHA256_BITS = 256


@dataclass(frozen=True)
class DriftReference:
    classes: list[str]
    class_prior: list[float]  # share of each predicted class, in `classes` order
    label_prior: list[float]  # share of each true class
    # "edges" (21 floats) and "counts" (20 ints) of numpy.histogram: bins [lo, hi), the last
    # one [0.95, 1] closed.
    confidence_histogram: dict[str, list[Any]]
    confidence_mean: float
    image_stats: dict[str, dict[str, float]]  # statistic -> summary, see `image_statistics`
    embedding: dict[str, Any]  # see `embedding_summary`
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DriftReference:
        expected = {f.name for f in fields(cls)}
        if set(values) != expected:
            raise ValueError(
                f"not a drift reference: missing {sorted(expected - set(values))}, "
                f"unexpected {sorted(set(values) - expected)}"
            )
        return cls(**values)


def drift_reference(
    probabilities: NDArray[np.floating[Any]],
    labels: NDArray[np.integer[Any]],
    pixels: NDArray[Any],
    embeddings: NDArray[np.floating[Any]],
    classes: Sequence[str],
    max_sample: int = 256,
    seed: int = 0,
) -> DriftReference:
    """The reference of a held-out split of n images.

    `probabilities` (n, k) are the served (softmax) outputs, `labels` (n,) the true class
    indices, `pixels` (n, h, w) the images as `per_image_statistics` expects them and
    `embeddings` (n, d) the head inputs (see `embeddings`), all in the same image order.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels)
    n, k = _check(probs, truth, pixels, embeddings, classes)
    confidence = probs.max(axis=1)
    counts, edges = np.histogram(confidence, bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    return DriftReference(
        classes=list(classes),
        class_prior=_shares(probs.argmax(axis=1), k),
        label_prior=_shares(truth, k),
        confidence_histogram={"edges": edges.tolist(), "counts": counts.tolist()},
        confidence_mean=float(confidence.mean()),
        image_stats=image_statistics(pixels),
        embedding=embedding_summary(embeddings, max_sample, seed),
        n=n,
    )


def per_image_statistics(pixels: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
    """Per image of ``pixels`` (n, h, w): ``mean_intensity``, ``contrast``, ``dark_fraction``.

    Pixels are greyscale, uint8 (divided by 255) or float in [0, 1]: the square greyscale
    picture of `fetalmlops.trainer.preprocessing.square_greyscale`, before the model's
    normalisation, which is what the inference service has decoded too. ``mean_intensity`` is
    the mean level, ``contrast`` the (population) standard deviation of the levels, and
    ``dark_fraction`` the share of pixels strictly below `DARK_LEVEL`.
    """
    levels = _levels(pixels).reshape(len(pixels), -1)
    return {
        "mean_intensity": levels.mean(axis=1),
        "contrast": levels.std(axis=1),
        "dark_fraction": (levels < DARK_LEVEL).mean(axis=1),
    }


def image_statistics(pixels: NDArray[Any]) -> dict[str, dict[str, float]]:
    """Each of `per_image_statistics` summarised over the images.

    Per statistic: ``mean``, ``std`` (population) and the percentiles ``p5``, ``p25``, ``p50``,
    ``p75``, ``p95`` (numpy's default linear interpolation).
    """
    return {name: summary(values) for name, values in per_image_statistics(pixels).items()}


def summary(values: NDArray[np.floating[Any]]) -> dict[str, float]:
    quantiles = np.percentile(values, QUANTILES)
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        **{f"p{q}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
    }


def embedding_summary(
    embeddings: NDArray[np.floating[Any]], max_sample: int = 256, seed: int = 0
) -> dict[str, Any]:
    """Per-dimension ``mean`` and ``std`` of the (n, dim) embeddings, and a ``sample``.

    The sample is at most ``max_sample`` rows drawn without replacement by
    ``numpy.random.default_rng(seed)``, in their original order. Rows wider than
    `MAX_SAMPLED_DIM` are projected to `PROJECTED_DIM` by `random_projection` (``projection``
    then describes it, else it is ``None``); ``mean`` and ``std`` stay in the full dimension.
    """
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"embeddings must be (n >= 1, dim >= 1), got {matrix.shape}")
    if max_sample < 1:
        raise ValueError(f"max_sample must be at least 1, got {max_sample}")
    n, dim = matrix.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_sample), replace=False))
    sample = matrix[rows]
    projection = None
    if dim > MAX_SAMPLED_DIM:
        sample = sample @ random_projection(dim, PROJECTED_DIM, seed)
        projection = {
            "method": "rademacher",
            "in_dim": dim,
            "out_dim": PROJECTED_DIM,
            "seed": seed,
            "recipe": PROJECTION_RECIPE,
        }
    return {
        "dim": dim,
        "mean": matrix.mean(axis=0).tolist(),
        "std": matrix.std(axis=0).tolist(),
        "sample": sample.tolist(),
        "sample_rows": len(rows),
        "projection": projection,
        "projection_seed": seed,
    }


def random_projection(in_dim: int, out_dim: int, seed: int) -> NDArray[np.float64]:
    """A fixed (in_dim, out_dim) random sign matrix scaled by 1/sqrt(out_dim).

    A Johnson–Lindenstrauss projection (Achlioptas 2003): distances between rows are kept
    within a small factor. Its signs come from SHA-256 rather than a numpy generator, whose
    streams numpy does not promise to keep across versions, so the inference service and the
    monitor can rebuild it from `PROJECTION_RECIPE` alone, in any language.
    """
    if in_dim < 1 or not 1 <= out_dim <= SHA256_BITS:
        raise ValueError(f"need in_dim >= 1 and 1 <= out_dim <= 256, got {in_dim}, {out_dim}")
    digests = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(in_dim))
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8)).reshape(in_dim, SHA256_BITS)
    signs = 1.0 - 2.0 * bits[:, :out_dim].astype(np.float64)
    return signs / math.sqrt(out_dim)


def embeddings(model: nn.Module, head: str, batches: Iterable[torch.Tensor]) -> NDArray[np.float32]:
    """The inputs of ``model``'s ``head`` submodule (e.g. ``"fc"``) over ``batches``, (n, features).

    Read by a forward pre-hook in eval mode under inference mode, on the model's own device;
    the hook is removed and every submodule's train/eval flag restored afterwards.
    """
    target = model.get_submodule(head)
    captured: list[torch.Tensor] = []

    def keep_input(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = target.register_forward_pre_hook(keep_input)
    modes = [(module, module.training) for module in model.modules()]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.inference_mode():
            for batch in batches:
                model(batch.to(device))
    finally:
        handle.remove()
        for module, training in modes:
            module.training = training
    if not captured:
        raise ValueError("no batches to embed")
    return torch.cat(captured).numpy()


def _check(
    probs: NDArray[np.float64],
    truth: NDArray[Any],
    pixels: NDArray[Any],
    embeddings: NDArray[Any],
    classes: Sequence[str],
) -> tuple[int, int]:
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != len(classes):
        raise ValueError(
            f"probabilities must be (n >= 1, {len(classes)} classes), got {probs.shape}"
        )
    n, k = probs.shape
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    if np.abs(probs.sum(axis=1) - 1).max() > ROW_SUM_TOLERANCE:
        raise ValueError("probability rows must sum to 1 (softmax outputs, not logits)")
    if truth.shape != (n,) or not np.issubdtype(truth.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer class indices, got {truth.shape}")
    if truth.min() < 0 or truth.max() >= k:
        raise ValueError(f"labels must lie in [0, {k})")
    if np.ndim(pixels) != 3 or len(pixels) != n:
        raise ValueError(f"pixels must be ({n}, h, w), got {np.shape(pixels)}")
    if np.ndim(embeddings) != 2 or len(embeddings) != n:
        raise ValueError(f"embeddings must be ({n}, d), got {np.shape(embeddings)}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or infinity")
    return n, k


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


def _shares(indices: NDArray[np.integer[Any]], k: int) -> list[float]:
    counts = np.bincount(indices, minlength=k)
    return (counts / counts.sum()).tolist()  # type: ignore[no-any-return]
