"""B-mode image formation: beams, speckle, attenuation, TGC, shadowing, scan conversion.

The scene is sampled on the scanner's own beam grid (depth × steering angle), so a profile with
fewer lines really has coarser resolution. Each sample's amplitude is the reflectivity times a
Rayleigh-distributed speckle (the magnitude of band-limited complex Gaussian noise), times what
survives of the beam: attenuation partly undone by time-gain compensation, and the shadow cast
by bone above it on the same beam. Log compression over the profile's dynamic range and scan
conversion into a fan-shaped frame give the picture a sonographer sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.phantom.anatomy import build_scene
from fetalmlops.datasets.phantom.profiles import ScannerProfile

# The virtual apex of the convex probe sits above the skin; the frame leaves room for the banner.
APEX_MM = 25.0
TOP_MARGIN = 0.14  # fraction of the frame height above the sector (banner and labels live there)


@dataclass(frozen=True)
class Geometry:
    """Where the fan lies in the frame: its bounding box and the physical size of a pixel."""

    rows: int
    cols: int
    apex_x: float  # pixels
    apex_y: float
    mm_per_pixel: float
    r_min_mm: float
    r_max_mm: float
    half_angle: float  # radians

    @property
    def region(self) -> tuple[int, int, int, int]:
        """Bounding box (x0, y0, x1, y1) of the imaging sector, inclusive."""
        s = np.sin(self.half_angle)
        x0 = int(np.floor(self.apex_x - self.r_max_mm * s / self.mm_per_pixel))
        x1 = int(np.ceil(self.apex_x + self.r_max_mm * s / self.mm_per_pixel))
        y0 = int(
            np.floor(self.apex_y + self.r_min_mm * np.cos(self.half_angle) / self.mm_per_pixel)
        )
        y1 = int(np.ceil(self.apex_y + self.r_max_mm / self.mm_per_pixel))
        return max(x0, 0), max(y0, 0), min(x1, self.cols - 1), min(y1, self.rows - 1)


def geometry(profile: ScannerProfile) -> Geometry:
    r_min, r_max = APEX_MM, APEX_MM + profile.depth_mm
    usable = profile.rows * (1 - TOP_MARGIN) - 4
    mm_per_pixel = (r_max - r_min * np.cos(np.radians(profile.half_angle_deg))) / usable
    apex_y = (
        profile.rows * TOP_MARGIN
        - r_min * np.cos(np.radians(profile.half_angle_deg)) / mm_per_pixel
    )
    return Geometry(
        profile.rows,
        profile.cols,
        profile.cols / 2,
        apex_y,
        mm_per_pixel,
        r_min,
        r_max,
        np.radians(profile.half_angle_deg),
    )


def beam_grid(
    profile: ScannerProfile, geo: Geometry
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Physical (x, depth) of every sample on every beam, shape (axial, lateral)."""
    r = np.linspace(geo.r_min_mm, geo.r_max_mm, profile.axial_samples)[:, None]
    theta = np.linspace(-geo.half_angle, geo.half_angle, profile.lateral_samples)[None, :]
    x = r * np.sin(theta)
    depth = r * np.cos(theta) - APEX_MM
    return x, depth


def speckle(
    shape: tuple[int, int], profile: ScannerProfile, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Rayleigh speckle with unit mean, grains elongated laterally as a real PSF is."""
    sigma = (profile.psf_axial, profile.psf_lateral)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma) + 1j * ndimage.gaussian_filter(
        rng.normal(size=shape), sigma
    )
    amplitude = np.abs(field)
    return np.asarray(amplitude / amplitude.mean(), dtype=np.float64)


def beamform(
    profile: ScannerProfile,
    geo: Geometry,
    plane: Plane,
    brain_plane: BrainPlane | None,
    ga_weeks: float,
    difficulty: float,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Display brightness in [0, 1] on the beam grid."""
    x, depth = beam_grid(profile, geo)
    scene = build_scene(x, depth, plane, brain_plane, ga_weeks, rng, difficulty)
    dr = profile.depth_mm / profile.axial_samples
    # Bone above a sample on the same beam takes the energy that would have reached it.
    shadow = np.exp(-np.cumsum(scene.bone, axis=0) * dr * 0.6)
    round_trip_db = (
        2 * profile.attenuation_db_cm_mhz * profile.frequency_mhz * np.maximum(depth, 0) / 10
    )
    net_db = -round_trip_db * (1 - profile.tgc) + profile.gain_db
    # Echogenicity is a perceptual scale; its cube spreads it over the decibels a scanner shows
    # (soft tissue about 27 dB below bone, fluid down at the noise floor).
    amplitude = scene.echo**3 * shadow * 10 ** (net_db / 20)
    amplitude = amplitude * speckle(amplitude.shape, profile, rng)
    noise = profile.noise_floor * (1 + difficulty) * speckle(amplitude.shape, profile, rng)
    decibels = 20 * np.log10(amplitude + noise + 1e-6)
    top = profile.gain_db + 6.0  # white sits a speckle peak above bone at this gain
    shown = np.clip((decibels - (top - profile.dynamic_range_db)) / profile.dynamic_range_db, 0, 1)
    return np.asarray(shown**profile.gamma, dtype=np.float64)


def scan_convert(
    beams: NDArray[np.float64], profile: ScannerProfile, geo: Geometry
) -> NDArray[np.uint8]:
    """Resample the beam grid into the fan-shaped frame (black outside the sector)."""
    yy, xx = np.mgrid[0 : geo.rows, 0 : geo.cols].astype(np.float64)
    dx = (xx - geo.apex_x) * geo.mm_per_pixel
    dy = (yy - geo.apex_y) * geo.mm_per_pixel
    r, theta = np.hypot(dx, dy), np.arctan2(dx, dy)
    axial = (r - geo.r_min_mm) / (geo.r_max_mm - geo.r_min_mm) * (profile.axial_samples - 1)
    lateral = (theta + geo.half_angle) / (2 * geo.half_angle) * (profile.lateral_samples - 1)
    inside = (r >= geo.r_min_mm) & (r <= geo.r_max_mm) & (np.abs(theta) <= geo.half_angle)
    frame = ndimage.map_coordinates(beams, [axial, lateral], order=1, mode="nearest")
    return np.asarray(np.clip(frame, 0, 1) * 255 * inside, dtype=np.uint8)
