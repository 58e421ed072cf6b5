"""The physics the phantom claims: Rayleigh speckle, depth attenuation, a fan inside its frame."""

from __future__ import annotations

import numpy as np

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.frame import render
from fetalmlops.datasets.phantom.profiles import PROFILES
from fetalmlops.datasets.phantom.ultrasound import geometry, speckle


def test_speckle_is_rayleigh_distributed() -> None:
    field = speckle((400, 300), PROFILES["highend-a"], np.random.default_rng(0))
    # A Rayleigh amplitude has std/mean = sqrt(4/pi - 1) ≈ 0.523, whatever its scale.
    assert abs(field.std() / field.mean() - np.sqrt(4 / np.pi - 1)) < 0.02
    assert field.min() >= 0


def test_the_fan_and_its_region_lie_inside_the_frame_below_the_banner_strip() -> None:
    for profile in PROFILES.values():
        frame = render(profile, Plane.OTHER, None, 24.0, 0.5, np.random.default_rng(1))
        x0, y0, x1, y1 = frame.region
        assert frame.pixels.shape == (profile.rows, profile.cols)
        assert y0 >= 0.12 * profile.rows and y1 < profile.rows and 0 < x0 < x1 < profile.cols
        # Outside the sector, below the overlay strip, the screen is black.
        assert frame.pixels[y1 - 5 :, :x0].max() == 0


def test_weaker_time_gain_compensation_darkens_the_depths() -> None:
    def depth_profile(name: str) -> tuple[float, float]:
        profile = PROFILES[name]
        frame = render(profile, Plane.MATERNAL_CERVIX, None, 24.0, 0.0, np.random.default_rng(2))
        geo = geometry(profile)
        centre = frame.pixels[:, int(geo.apex_x) - 20 : int(geo.apex_x) + 20].astype(float)
        _, y0, _, y1 = frame.region
        span = y1 - y0
        return centre[y0 + span // 5 : y0 + 2 * span // 5].mean(), centre[
            y1 - span // 5 : y1
        ].mean()

    shallow_hi, deep_hi = depth_profile("highend-a")
    shallow_lo, deep_lo = depth_profile("portable")
    assert deep_lo / shallow_lo < deep_hi / shallow_hi
