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

The same seeded rows are kept whole in `sample` (their served probabilities and image
statistics beside the embedding rows), so the monitor's two-sample tests, and the calibration of
its alarm on resampled no-shift windows, compare live rows with reference rows, not summaries.

Everything here is a pure function of arrays, and a `DriftReference` is plain JSON (it is stored
in the model registry's ``drift_reference`` column). The statistics the inference side must
compute on live images, `per_image_statistics` for the images and `random_projection` for
embeddings wider than `MAX_SAMPLED_DIM`, live in `fetalmlops.imaging.statistics`, shared with
the inference service and the monitor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fetalmlops.imaging.statistics import (
    MAX_SAMPLED_DIM,
    PROJECTED_DIM,
    PROJECTION_RECIPE,
    PROJECTION_SEED,
    per_image_statistics,
    projected,
)

CONFIDENCE_BINS = 20
QUANTILES = (5, 25, 50, 75, 95)
ROW_SUM_TOLERANCE = 1e-3


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
    # The rows of `embedding["sample"]`: "probabilities" (rows, k), "image_stats" (statistic
    # -> rows values) and "segments" (rows; absent before segments were kept). None in
    # references written before the rows were kept.
    sample: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DriftReference:
        expected = {f.name for f in fields(cls)}
        if set(values) | {"sample"} != expected:
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
    segments: Sequence[str] | None = None,
) -> DriftReference:
    """The reference of a held-out split of n images.

    `probabilities` (n, k) are the served (softmax) outputs, `labels` (n,) the true class
    indices, `pixels` (n, h, w) the images as `per_image_statistics` expects them and
    `embeddings` (n, d) the head inputs (see `embeddings`), all in the same image order;
    `segments` (n,) the scanner segment of each image, kept with the sample rows so that the
    monitor compares a scanner's predictions with that scanner's rows: a model trained on
    several scanners has a reference that mixes them, and one scanner alone differs from the
    mixture without anything having changed.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    truth = np.asarray(labels)
    n, k = _check(probs, truth, pixels, embeddings, classes)
    if segments is not None and len(segments) != n:
        raise ValueError(f"{len(segments)} segments for {n} images")
    confidence = probs.max(axis=1)
    counts, edges = np.histogram(confidence, bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    statistics = per_image_statistics(pixels)
    rows = sample_rows(n, max_sample, seed)
    return DriftReference(
        classes=list(classes),
        class_prior=_shares(probs.argmax(axis=1), k),
        label_prior=_shares(truth, k),
        confidence_histogram={"edges": edges.tolist(), "counts": counts.tolist()},
        confidence_mean=float(confidence.mean()),
        image_stats={name: summary(values) for name, values in statistics.items()},
        embedding=embedding_summary(embeddings, max_sample, seed),
        n=n,
        sample={
            "probabilities": probs[rows].tolist(),
            "image_stats": {name: values[rows].tolist() for name, values in statistics.items()},
            **({} if segments is None else {"segments": [segments[i] for i in rows]}),
        },
    )


def sample_rows(n: int, max_sample: int, seed: int) -> NDArray[np.intp]:
    """At most ``max_sample`` of ``n`` row indices, drawn without replacement by
    ``numpy.random.default_rng(seed)``, in their original order."""
    if max_sample < 1:
        raise ValueError(f"max_sample must be at least 1, got {max_sample}")
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_sample), replace=False))


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
    `MAX_SAMPLED_DIM` are projected to `PROJECTED_DIM` by `random_projection` with the shared
    `PROJECTION_SEED`, as prediction events project theirs (``projection`` then describes it,
    else it is ``None``); ``mean`` and ``std`` stay in the full dimension.
    """
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"embeddings must be (n >= 1, dim >= 1), got {matrix.shape}")
    n, dim = matrix.shape
    rows = sample_rows(n, max_sample, seed)
    sample = projected(matrix[rows])
    projection = None
    if dim > MAX_SAMPLED_DIM:
        projection = {
            "method": "rademacher",
            "in_dim": dim,
            "out_dim": PROJECTED_DIM,
            "seed": PROJECTION_SEED,
            "recipe": PROJECTION_RECIPE,
        }
    return {
        "dim": dim,
        "mean": matrix.mean(axis=0).tolist(),
        "std": matrix.std(axis=0).tolist(),
        "sample": sample.tolist(),
        "sample_rows": len(rows),
        "projection": projection,
        "projection_seed": PROJECTION_SEED,
    }


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


def _shares(indices: NDArray[np.integer[Any]], k: int) -> list[float]:
    counts = np.bincount(indices, minlength=k)
    return (counts / counts.sum()).tolist()  # type: ignore[no-any-return]
