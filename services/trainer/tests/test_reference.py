"""Drift reference statistics, checked by hand on small cases, and the head-input hook."""

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fetalmlops.imaging.statistics import (
    PROJECTION_SEED,
    per_image_statistics,
    random_projection,
)
from fetalmlops.trainer.backbones import Strategy, backbone, build
from fetalmlops.trainer.reference import (
    CONFIDENCE_BINS,
    MAX_SAMPLED_DIM,
    PROJECTED_DIM,
    DriftReference,
    drift_reference,
    embedding_summary,
    embeddings,
    image_statistics,
)

CLASSES = ["a", "b", "c"]


def reference(n: int = 4, dim: int = 8, max_sample: int = 256, seed: int = 0) -> DriftReference:
    rng = np.random.default_rng(n + dim)
    logits = rng.normal(size=(n, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return drift_reference(
        probabilities,
        rng.integers(0, 3, n),
        rng.integers(0, 256, (n, 8, 8), dtype=np.uint8),
        rng.normal(size=(n, dim)),
        CLASSES,
        max_sample=max_sample,
        seed=seed,
    )


def test_priors_histogram_and_mean_by_hand() -> None:
    probabilities = np.array(
        [
            [0.72, 0.18, 0.10],  # predicts a, confidence 0.72
            [0.10, 0.86, 0.04],  # predicts b, 0.86
            [0.61, 0.29, 0.10],  # predicts a, 0.61
            [0.20, 0.28, 0.52],  # predicts c, 0.52
        ]
    )
    labels = np.array([0, 1, 1, 1])
    pixels = np.zeros((4, 2, 2), dtype=np.uint8)

    ref = drift_reference(probabilities, labels, pixels, np.eye(4), CLASSES)

    assert ref.class_prior == [0.5, 0.25, 0.25]
    assert ref.label_prior == [0.25, 0.75, 0.0]
    assert ref.confidence_mean == pytest.approx((0.72 + 0.86 + 0.61 + 0.52) / 4)
    edges, counts = ref.confidence_histogram["edges"], ref.confidence_histogram["counts"]
    assert len(edges) == CONFIDENCE_BINS + 1 and edges[0] == 0.0 and edges[-1] == 1.0
    assert sum(counts) == 4
    # Bins of width 0.05: 0.52 falls in bin 10, 0.61 in 12, 0.72 in 14, 0.86 in 17.
    assert [i for i, count in enumerate(counts) if count] == [10, 12, 14, 17]
    assert ref.n == 4
    assert ref.classes == CLASSES


def test_a_confidence_of_exactly_one_is_counted() -> None:
    probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    ref = drift_reference(
        probabilities, np.array([0, 2]), np.zeros((2, 1, 1)), np.zeros((2, 3)), CLASSES
    )
    assert ref.confidence_histogram["counts"][-1] == 2


def test_image_statistics_by_hand() -> None:
    black = np.zeros((4, 4), dtype=np.uint8)
    white = np.full((4, 4), 255, dtype=np.uint8)
    checker = np.indices((4, 4)).sum(axis=0) % 2 * 255  # half 0, half 255
    pixels = np.stack([black, white, checker.astype(np.uint8)])

    per_image = per_image_statistics(pixels)

    np.testing.assert_allclose(per_image["mean"], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(per_image["std"], [0.0, 0.0, 0.5])
    np.testing.assert_allclose(per_image["dark_fraction"], [1.0, 0.0, 0.5])
    # The same images as floats in [0, 1] give the same statistics.
    floats = per_image_statistics(pixels.astype(np.float32) / 255)
    for name, values in per_image.items():
        np.testing.assert_allclose(floats[name], values)

    summary = image_statistics(pixels)
    assert summary["mean"]["mean"] == pytest.approx(0.5)
    assert summary["mean"]["p50"] == pytest.approx(0.5)
    assert summary["dark_fraction"]["p5"] == pytest.approx(0.05)  # 0 → 0.5, interpolated


def test_quantiles_are_ordered() -> None:
    rng = np.random.default_rng(7)
    pixels = (rng.random((50, 16, 16)) * rng.random((50, 1, 1))).astype(np.float32)

    for statistic in image_statistics(pixels).values():
        quantiles = [statistic[key] for key in ("p5", "p25", "p50", "p75", "p95")]
        assert quantiles == sorted(quantiles)
        assert quantiles[0] < quantiles[-1]


@pytest.mark.parametrize("pixels", [np.full((2, 3, 3), 1.5), np.full((2, 3, 3), -0.1)])
def test_float_pixels_outside_the_unit_range_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        per_image_statistics(pixels)


def test_logits_instead_of_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        drift_reference(
            np.array([[2.0, 1.0, 0.5]]),
            np.array([0]),
            np.zeros((1, 2, 2)),
            np.zeros((1, 2)),
            CLASSES,
        )


def test_json_round_trip_is_exact() -> None:
    for dim in (8, 100):
        ref = reference(n=30, dim=dim)
        text = json.dumps(ref.to_dict(), allow_nan=False)  # plain JSON: no numpy types, no NaN
        assert DriftReference.from_dict(json.loads(text)) == ref


def test_from_dict_refuses_another_shape() -> None:
    values = reference().to_dict()
    del values["embedding"]
    with pytest.raises(ValueError, match="embedding"):
        DriftReference.from_dict(values)


def test_embedding_sample_is_seeded_and_bounded() -> None:
    matrix = np.random.default_rng(3).normal(size=(500, 16))

    first = embedding_summary(matrix, max_sample=64, seed=1)
    again = embedding_summary(matrix, max_sample=64, seed=1)
    other = embedding_summary(matrix, max_sample=64, seed=2)

    assert first == again
    assert first["sample"] != other["sample"]
    assert len(first["sample"]) == first["sample_rows"] == 64
    rows = {tuple(row) for row in matrix.tolist()}
    assert all(tuple(row) in rows for row in first["sample"])  # whole rows, unprojected
    assert len({tuple(row) for row in first["sample"]}) == 64  # without replacement
    np.testing.assert_allclose(first["mean"], matrix.mean(axis=0))
    np.testing.assert_allclose(first["std"], matrix.std(axis=0))
    assert first["projection"] is None

    small = embedding_summary(matrix[:10], max_sample=64)
    assert len(small["sample"]) == 10


def test_wide_embeddings_are_sampled_through_the_documented_projection() -> None:
    at_limit = np.random.default_rng(4).normal(size=(40, MAX_SAMPLED_DIM))
    assert len(embedding_summary(at_limit)["sample"][0]) == MAX_SAMPLED_DIM

    wide = np.random.default_rng(5).normal(size=(40, MAX_SAMPLED_DIM + 1))
    summary = embedding_summary(wide, max_sample=40, seed=9)

    assert summary["dim"] == MAX_SAMPLED_DIM + 1
    assert len(summary["mean"]) == MAX_SAMPLED_DIM + 1  # summaries stay in full dimension
    assert summary["projection"]["out_dim"] == PROJECTED_DIM
    # The sampling seed picks rows; the projection is the one live events use, whatever it.
    assert summary["projection"]["seed"] == summary["projection_seed"] == PROJECTION_SEED
    # All 40 rows sampled, in order: the sample is exactly the projected embeddings.
    np.testing.assert_allclose(
        summary["sample"],
        wide @ random_projection(MAX_SAMPLED_DIM + 1, PROJECTED_DIM, PROJECTION_SEED),
    )


def test_projection_follows_its_recipe_and_keeps_distances() -> None:
    projection = random_projection(512, 32, seed=0)

    assert projection.shape == (512, 32)
    assert set(np.unique(projection)) == {-1 / math.sqrt(32), 1 / math.sqrt(32)}
    # Row 0: the first 32 bits of sha256(b"0:0"), 0 -> +1 and 1 -> -1.
    first = int.from_bytes(hashlib.sha256(b"0:0").digest()[:4], "big")
    expected = [1.0 if not first >> (31 - j) & 1 else -1.0 for j in range(32)]
    np.testing.assert_array_equal(projection[0] * math.sqrt(32), expected)
    assert not np.array_equal(projection, random_projection(512, 32, seed=1))

    points = np.random.default_rng(0).normal(size=(2, 512))
    before = np.linalg.norm(points[0] - points[1])
    after = np.linalg.norm((points[0] - points[1]) @ projection)
    assert 0.5 < after / before < 1.5


def head_has_no_hooks(model: nn.Module, head: str) -> bool:
    return not model.get_submodule(head)._forward_pre_hooks


def test_tiny_embeddings_are_its_head_input() -> None:
    torch.manual_seed(0)
    model = build("tiny", 6, Strategy.FINE_TUNE)
    model.train()
    images = torch.randn(5, 3, 64, 64)

    features = embeddings(model, backbone("tiny").head, [images[:3], images[3:]])

    assert features.shape == (5, 128)
    assert features.dtype == np.float32
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(features, model.features(images).numpy(), rtol=1e-5, atol=1e-6)
    assert head_has_no_hooks(model, "classifier")


def test_resnet18_embeddings_have_512_features_and_the_model_is_left_as_found() -> None:
    torch.manual_seed(0)
    model = build("resnet18", 6, Strategy.LINEAR_PROBE)
    model.train()
    head = backbone("resnet18").head

    features = embeddings(model, head, [torch.randn(2, 3, 64, 64), torch.randn(1, 3, 64, 64)])

    assert features.shape == (3, 512)
    assert np.isfinite(features).all()
    assert head_has_no_hooks(model, head)
    assert all(module.training for module in model.modules())  # train mode restored


def test_the_hook_is_removed_when_the_forward_pass_fails() -> None:
    model = build("tiny", 6, Strategy.FINE_TUNE)
    with pytest.raises(RuntimeError):
        embeddings(model, "classifier", [torch.randn(1, 5, 32, 32)])  # 5 channels, not 3
    assert head_has_no_hooks(model, "classifier")


def test_the_sample_keeps_whole_rows_beside_the_embedding_rows() -> None:
    n, dim = 40, 6
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(n, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pixels = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    rows = np.arange(n, dtype=np.float64)[:, None] * np.ones(dim)  # row i is all i
    ref = drift_reference(probabilities, rng.integers(0, 3, n), pixels, rows, CLASSES, 10)
    assert ref.sample is not None
    kept = [int(row[0]) for row in ref.embedding["sample"]]
    assert len(kept) == 10 and kept == sorted(kept)
    np.testing.assert_allclose(ref.sample["probabilities"], probabilities[kept])
    statistics = per_image_statistics(pixels[kept])
    for name, values in statistics.items():
        np.testing.assert_allclose(ref.sample["image_stats"][name], values)


def test_a_reference_written_before_samples_were_kept_still_loads() -> None:
    values = reference().to_dict()
    del values["sample"]
    assert DriftReference.from_dict(values).sample is None


def test_each_sample_row_names_its_scanner_segment() -> None:
    n = 40
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), size=n)
    segments = [f"scanner-{i % 3}" for i in range(n)]
    embeddings = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 4))
    ref = drift_reference(
        probabilities, np.zeros(n, dtype=int), np.full((n, 8, 8), 0.5), embeddings, CLASSES,
        max_sample=16, segments=segments,
    )  # fmt: skip
    assert ref.sample is not None
    sampled = [int(row[0]) for row in ref.embedding["sample"]]  # row i's embedding is i
    assert ref.sample["segments"] == [segments[i] for i in sampled]
    with pytest.raises(ValueError, match="segments"):
        drift_reference(
            probabilities, np.zeros(n, dtype=int), np.full((n, 8, 8), 0.5), embeddings,
            CLASSES, segments=segments[:-1],
        )  # fmt: skip
