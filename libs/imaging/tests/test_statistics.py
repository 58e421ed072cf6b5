"""The statistics producers and the monitor share, checked against their written definitions."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from fetalmlops.imaging.statistics import (
    DARK_LEVEL,
    PROJECTION_RECIPE,
    per_image_statistics,
    random_projection,
)


def test_dark_means_strictly_below_the_dark_level() -> None:
    # 12/255 ≈ 0.047 is dark, 13/255 ≈ 0.051 is not; a float exactly at the level is not either.
    levels = np.array([[[12, 13], [0, 255]]], dtype=np.uint8)
    at_level = np.full((1, 2, 2), DARK_LEVEL)

    assert per_image_statistics(levels)["dark_fraction"].tolist() == [0.5]
    assert per_image_statistics(at_level)["dark_fraction"].tolist() == [0.0]


def test_each_image_is_summarised_on_its_own() -> None:
    pixels = np.stack([np.full((3, 3), 51, np.uint8), np.array([[0] * 3, [255] * 3, [0] * 3])])

    statistics = per_image_statistics(pixels.astype(np.uint8))

    np.testing.assert_allclose(statistics["mean"], [0.2, 1 / 3])
    np.testing.assert_allclose(statistics["std"], [0.0, math.sqrt(2) / 3])
    np.testing.assert_allclose(statistics["dark_fraction"], [0.0, 2 / 3])


@pytest.mark.parametrize(
    ("pixels", "reason"),
    [
        (np.zeros((4, 4), np.uint8), r"\(n >= 1, h, w\)"),  # one image without its batch axis
        (np.zeros((0, 4, 4), np.uint8), r"\(n >= 1, h, w\)"),
        (np.zeros((1, 4, 4), np.uint16), "uint8 or float"),
        (np.full((1, 2, 2), np.nan), r"\[0, 1\]"),
    ],
)
def test_pixels_of_another_kind_are_refused(pixels: np.ndarray, reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=reason):
        per_image_statistics(pixels)


def recipe(in_dim: int, out_dim: int, seed: int) -> np.ndarray:  # type: ignore[type-arg]
    """`PROJECTION_RECIPE`, read literally, with integers rather than numpy's bit unpacking."""
    matrix = np.empty((in_dim, out_dim))
    for i in range(in_dim):
        digest = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest(), "big")
        for j in range(out_dim):
            bit = digest >> (255 - j) & 1  # bit 0: the most significant of the first byte
            matrix[i, j] = (1.0 if bit == 0 else -1.0) / math.sqrt(out_dim)
    return matrix


@pytest.mark.parametrize(("in_dim", "out_dim", "seed"), [(1, 1, 0), (70, 32, 9), (5, 256, 3)])
def test_the_projection_is_its_recipe(in_dim: int, out_dim: int, seed: int) -> None:
    assert "sha256(f'{seed}:{i}'.encode())" in PROJECTION_RECIPE
    np.testing.assert_array_equal(
        random_projection(in_dim, out_dim, seed), recipe(in_dim, out_dim, seed)
    )


@pytest.mark.parametrize(("in_dim", "out_dim"), [(0, 8), (8, 0), (8, 257)])
def test_a_projection_sha256_cannot_give_is_refused(in_dim: int, out_dim: int) -> None:
    with pytest.raises(ValueError, match="need in_dim"):
        random_projection(in_dim, out_dim, 0)
