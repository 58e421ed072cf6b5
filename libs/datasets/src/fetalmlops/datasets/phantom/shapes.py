"""Soft-edged geometric primitives evaluated on arrays of physical coordinates (mm).

Each returns a coverage in [0, 1] per point, so the anatomy is resolution independent: the same
scene is sampled by every scanner profile's own beam grid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def _smoothstep(edge: float, distance: Array) -> Array:
    """1 inside (distance < 0), 0 outside, a linear ramp of width ``edge`` mm across the border."""
    return np.clip(0.5 - distance / max(edge, 1e-6), 0.0, 1.0)


def _ellipse_distance(
    x: Array, z: Array, cx: float, cz: float, a: float, b: float, angle: float
) -> Array:
    """Approximate signed distance (mm) to an ellipse's border: the normalised radius, scaled."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dz = x - cx, z - cz
    u, v = c * dx + s * dz, -s * dx + c * dz
    rho: Array = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (rho - 1.0) * min(a, b)


def ellipse(
    x: Array,
    z: Array,
    cx: float,
    cz: float,
    a: float,
    b: float,
    angle: float = 0.0,
    edge: float = 0.8,
) -> Array:
    return _smoothstep(edge, _ellipse_distance(x, z, cx, cz, a, b, angle))


def ring(
    x: Array,
    z: Array,
    cx: float,
    cz: float,
    a: float,
    b: float,
    thickness: float,
    angle: float = 0.0,
    edge: float = 0.6,
) -> Array:
    distance = np.abs(_ellipse_distance(x, z, cx, cz, a, b, angle))
    return _smoothstep(edge, distance - thickness / 2)


def capsule(
    x: Array,
    z: Array,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    edge: float = 0.6,
) -> Array:
    """A thick segment with round ends: bones, vessels, canals."""
    (x0, z0), (x1, z1) = p0, p1
    dx, dz = x1 - x0, z1 - z0
    t = np.clip(((x - x0) * dx + (z - z0) * dz) / max(dx * dx + dz * dz, 1e-9), 0.0, 1.0)
    distance = np.hypot(x - (x0 + t * dx), z - (z0 + t * dz))
    return _smoothstep(edge, distance - radius)


def arc(
    x: Array,
    z: Array,
    cx: float,
    cz: float,
    radius: float,
    start: float,
    stop: float,
    thickness: float,
    edge: float = 0.6,
) -> Array:
    """Part of a circle between two polar angles (radians, measured from +x towards +z)."""
    theta = np.arctan2(z - cz, x - cx)
    inside = ((theta - start) % (2 * np.pi)) <= ((stop - start) % (2 * np.pi))
    band = _smoothstep(edge, np.abs(np.hypot(x - cx, z - cz) - radius) - thickness / 2)
    return band * inside


def at(cx: float, cz: float, angle: float, u: float, v: float) -> tuple[float, float]:
    """The physical point at local coordinates (u, v) of a frame centred on (cx, cz)."""
    c, s = np.cos(angle), np.sin(angle)
    return cx + c * u - s * v, cz + s * u + c * v
