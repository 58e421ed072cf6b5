"""The canonical picture: greyscale, cropped to the region, centred on black, square, 8-bit PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fetalmlops.imaging.canonical import CANONICAL_SIZE, canonical, greyscale, union


def decoded(png: bytes) -> np.ndarray:  # type: ignore[type-arg]
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.mode == "L"
        return np.asarray(picture)


def test_colour_becomes_bt601_luminance() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 100, 100]]], dtype=np.uint8)

    assert greyscale(rgb).tolist() == [[76, 149, 29, 100]]  # 0.299, 0.587, 0.114 of 255


def test_eight_bits_stay_as_they_are_and_wider_ones_are_scaled_to_their_peak() -> None:
    eight = np.array([[0, 17, 255]], dtype=np.uint8)
    sixteen = np.array([[0, 1000, 4000]], dtype=np.uint16)

    assert greyscale(eight).tolist() == [[0, 17, 255]]
    assert greyscale(sixteen).tolist() == [[0, 63, 255]]  # 1000 * 255 / 4000 = 63.75


def test_the_region_is_cropped_centred_on_black_and_resized() -> None:
    pixels = np.zeros((40, 60), dtype=np.uint8)
    pixels[10:20, 5:45] = 200  # the sector: 40 wide, 10 high
    pixels[0:5, :] = 255  # a banner outside it

    square = decoded(canonical(pixels, (5, 10, 44, 19), size=40))

    assert square.shape == (40, 40)
    # 40 x 10 padded to 40 x 40: 15 black rows above and below, the sector in between.
    assert not square[:14].any() and not square[-14:].any()
    assert (square[16:24] == 200).all()


def test_without_a_region_the_whole_frame_is_kept() -> None:
    pixels = np.full((30, 30), 90, dtype=np.uint8)

    square = decoded(canonical(pixels, None))

    assert square.shape == (CANONICAL_SIZE, CANONICAL_SIZE) and (square == 90).all()


def test_the_same_pixels_give_the_same_bytes() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (50, 70), dtype=np.uint8)

    assert canonical(pixels, (3, 4, 60, 40)) == canonical(pixels.copy(), (3, 4, 60, 40))


@pytest.mark.parametrize(
    ("regions", "expected"),
    [([], None), ([(1, 2, 3, 4)], (1, 2, 3, 4)), ([(5, 2, 9, 4), (1, 6, 3, 8)], (1, 2, 9, 8))],
)
def test_union_is_the_smallest_box_holding_every_region(
    regions: list[tuple[int, int, int, int]], expected: tuple[int, int, int, int] | None
) -> None:
    assert union(regions) == expected
