"""Anatomically inspired scenes for the six standard planes, as echogenicity and bone maps.

Sizes follow gestational age (biparietal diameter, abdominal diameter and femur length grow
roughly linearly through the second and third trimester). Echogenicity is relative reflectivity
(fluid ≈ 0, soft tissue ≈ 0.3–0.5, bone ≈ 1); ``bone`` is how strongly a point blocks the beam
and casts the acoustic shadow behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.phantom.shapes import Array, arc, at, capsule, ellipse, ring

FLUID, TISSUE, BRIGHT, BONE = 0.001, 0.35, 0.75, 1.0


@dataclass
class Scene:
    x: Array  # lateral position of every beam sample, mm
    z: Array  # depth below the skin, mm
    echo: Array
    bone: Array

    def paint(self, coverage: Array, echo: float | Array, bone: float = 0.0) -> None:
        self.echo = self.echo * (1.0 - coverage) + echo * coverage
        if bone:
            self.bone = np.maximum(self.bone, bone * coverage)


def biparietal_mm(ga_weeks: float) -> float:
    return 2.6 * ga_weeks - 6.0


def abdominal_mm(ga_weeks: float) -> float:
    return 3.2 * ga_weeks - 16.0


def femur_mm(ga_weeks: float) -> float:
    return 2.4 * ga_weeks - 15.0


def texture(scene: Scene, rng: np.random.Generator, scale_mm: float, amount: float) -> Array:
    """A smooth multiplicative variation of tissue brightness (1 ± amount)."""
    x0, z0 = scene.x.min(), scene.z.min()
    shape = (
        int((scene.z.max() - z0) / scale_mm) + 4,
        int((scene.x.max() - x0) / scale_mm) + 4,
    )
    coarse = rng.normal(0.0, 1.0, shape)
    field = ndimage.map_coordinates(
        coarse, [(scene.z - z0) / scale_mm + 1, (scene.x - x0) / scale_mm + 1], order=3
    )
    return np.asarray(1.0 + amount * np.tanh(field), dtype=np.float64)


def maternal_layers(scene: Scene, rng: np.random.Generator) -> float:
    """Skin, fat and muscle bands under the probe; returns where the uterus begins (mm)."""
    depth = 0.0
    for echo, thickness in ((0.8, 2.0), (0.25, rng.uniform(6, 14)), (0.55, rng.uniform(5, 9))):
        band = (scene.z >= depth) & (scene.z < depth + thickness)
        scene.paint(band.astype(float), echo)
        depth += thickness
    return depth


def amniotic_pool(scene: Scene, rng: np.random.Generator, top: float) -> None:
    """The fluid the fetus floats in, bounded by the uterine wall."""
    wall = (scene.z >= top) & (scene.z < top + 4)
    scene.paint(wall.astype(float), 0.5)
    pool = ellipse(scene.x, scene.z, rng.uniform(-10, 10), top + 70, 110, 66, edge=6)
    scene.paint(pool * (scene.z > top + 4), FLUID)


def draw_brain(scene: Scene, rng: np.random.Generator, ga: float, sub: BrainPlane | None) -> None:
    bpd = biparietal_mm(ga) * rng.uniform(0.93, 1.07)
    a, b = 0.62 * bpd, 0.5 * bpd  # occipito-frontal is longer than biparietal
    cx, cz, angle = rng.uniform(-15, 15), rng.uniform(50, 72), rng.uniform(-0.5, 0.5)
    x, z = scene.x, scene.z
    scene.paint(ellipse(x, z, cx, cz, a, b, angle), 0.14)  # parenchyma is hypoechoic
    scene.paint(ring(x, z, cx, cz, a, b, rng.uniform(2.2, 3.2), angle), BONE, bone=0.25)
    front, back = at(cx, cz, angle, a * 0.92, 0), at(cx, cz, angle, -a * 0.92, 0)
    scene.paint(capsule(x, z, front, back, 0.45), 0.6)  # falx cerebri, the midline echo
    if sub is BrainPlane.TRANS_CEREBELLUM:
        for side in (-1, 1):  # the cerebellar hemispheres, a dumbbell in the posterior fossa
            scene.paint(
                ellipse(x, z, *at(cx, cz, angle, -0.5 * a, side * 0.16 * b), 0.13 * b, 0.11 * b),
                0.42,
            )
        scene.paint(
            ellipse(x, z, *at(cx, cz, angle, -0.78 * a, 0), 0.12 * a, 0.26 * b, angle), FLUID
        )
    elif sub is BrainPlane.TRANS_VENTRICULAR:
        for side in (-1, 1):  # posterior horns of the lateral ventricles with the choroid plexus
            centre = at(cx, cz, angle, -0.45 * a, side * 0.42 * b)
            scene.paint(ellipse(x, z, *centre, 0.3 * a, 0.1 * b, angle), FLUID)
            scene.paint(ellipse(x, z, *centre, 0.16 * a, 0.06 * b, angle), BRIGHT)
    else:  # trans-thalamic (the default brain plane): thalami and the cavum septi pellucidi
        for side in (-1, 1):
            scene.paint(
                ellipse(
                    x, z, *at(cx, cz, angle, -0.05 * a, side * 0.17 * b), 0.2 * a, 0.13 * b, angle
                ),
                0.3,
            )
        scene.paint(ellipse(x, z, *at(cx, cz, angle, 0.38 * a, 0), 0.1 * a, 0.07 * b, angle), FLUID)


def spine_dots(scene: Scene, centre: tuple[float, float], angle: float, size: float) -> None:
    """Three ossification centres of a vertebra, bright and shadowing."""
    for u, v in ((0.0, 0.0), (-0.7, -0.8), (-0.7, 0.8)):
        dot = at(*centre, angle, u * size, v * size)
        scene.paint(ellipse(scene.x, scene.z, *dot, 0.45 * size, 0.45 * size), BONE, bone=1.2)


def draw_abdomen(scene: Scene, rng: np.random.Generator, ga: float) -> None:
    r = abdominal_mm(ga) / 2 * rng.uniform(0.92, 1.08)
    a, b = r * rng.uniform(1.0, 1.1), r
    cx, cz, angle = rng.uniform(-15, 15), rng.uniform(50, 72), rng.uniform(-np.pi, np.pi)
    x, z = scene.x, scene.z
    scene.paint(ellipse(x, z, cx, cz, a, b, angle), 0.36)  # liver
    scene.paint(ring(x, z, cx, cz, a, b, 1.6, angle), 0.6)  # skin
    scene.paint(
        ellipse(x, z, *at(cx, cz, angle, 0.1 * a, -0.42 * b), 0.26 * a, 0.17 * b, angle + 0.3),
        FLUID,
    )  # stomach bubble
    vein = (at(cx, cz, angle, 0.75 * a, 0.1 * b), at(cx, cz, angle, 0.1 * a, 0.18 * b))
    scene.paint(capsule(x, z, *vein, 0.06 * r), FLUID)  # umbilical vein
    spine_dots(scene, at(cx, cz, angle, -0.72 * a, 0.0), angle, 0.09 * r)


def draw_femur(scene: Scene, rng: np.random.Generator, ga: float) -> None:
    length = femur_mm(ga) * rng.uniform(0.9, 1.1)
    cx, cz, angle = rng.uniform(-15, 15), rng.uniform(50, 75), rng.uniform(-0.45, 0.45)
    x, z = scene.x, scene.z
    scene.paint(ellipse(x, z, cx, cz, 0.75 * length, 0.28 * length, angle), 0.33)  # thigh
    p0, p1 = at(cx, cz, angle, -length / 2, 0), at(cx, cz, angle, length / 2, 0)
    scene.paint(capsule(x, z, p0, p1, rng.uniform(1.4, 2.2)), BONE, bone=2.0)  # diaphysis


def draw_thorax(scene: Scene, rng: np.random.Generator, ga: float) -> None:
    r = 0.92 * abdominal_mm(ga) / 2 * rng.uniform(0.92, 1.08)
    cx, cz, angle = rng.uniform(-15, 15), rng.uniform(50, 72), rng.uniform(-np.pi, np.pi)
    x, z = scene.x, scene.z
    scene.paint(ellipse(x, z, cx, cz, r, r * 0.95, angle), 0.6)  # lungs are bright
    scene.paint(ring(x, z, cx, cz, r, r * 0.95, 1.4, angle), 0.6)
    for k in range(rng.integers(5, 9)):  # ribs around the chest wall, each with its shadow
        start = angle + k * 2 * np.pi / 8 + rng.uniform(-0.1, 0.1)
        scene.paint(arc(x, z, cx, cz, r * 0.97, start, start + 0.28, 1.6), BONE, bone=0.9)
    hx, hz = at(cx, cz, angle, 0.25 * r, 0.1 * r)
    h = 0.5 * r
    heart_angle = angle + 0.75
    scene.paint(ellipse(x, z, hx, hz, h, h * 0.85, heart_angle), 0.55)  # myocardium
    for su, sv in ((1, 1), (1, -1), (-1, 1), (-1, -1)):  # the four chambers
        chamber = at(hx, hz, heart_angle, su * 0.42 * h, sv * 0.38 * h)
        scene.paint(ellipse(x, z, *chamber, 0.33 * h, 0.28 * h, heart_angle), FLUID)
    spine_dots(scene, at(cx, cz, angle, -0.78 * r, 0.0), angle, 0.09 * r)


def draw_cervix(scene: Scene, rng: np.random.Generator, ga: float) -> None:
    """Transabdominal maternal cervix: a long stromal body with the endocervical canal."""
    x, z = scene.x, scene.z
    scene.paint(
        ellipse(x, z, rng.uniform(-25, 25), rng.uniform(20, 35), 45, 18, edge=4), FLUID
    )  # bladder
    length = rng.uniform(28, 45)
    cx, cz, angle = rng.uniform(-12, 12), rng.uniform(65, 90), rng.uniform(-0.6, 0.6)
    scene.paint(ellipse(x, z, cx, cz, 0.75 * length, 0.42 * length, angle, edge=3), 0.52)  # stroma
    p0, p1 = at(cx, cz, angle, -length / 2, 0), at(cx, cz, angle, length / 2, 0)
    scene.paint(capsule(x, z, p0, p1, 2.6), 0.15)  # mucosa
    scene.paint(capsule(x, z, p0, p1, 0.7), BRIGHT)  # canal


def draw_other(scene: Scene, rng: np.random.Generator, ga: float) -> None:
    """Anything else a sonographer saves: kidneys, profile, spine, placenta, cord."""
    x, z = scene.x, scene.z
    cx, cz, angle = rng.uniform(-20, 20), rng.uniform(50, 90), rng.uniform(-np.pi, np.pi)
    kind = rng.integers(0, 5)
    if kind == 0:  # kidney with its bright renal pelvis
        scene.paint(ellipse(x, z, cx, cz, 18, 10, angle), 0.3)
        scene.paint(ellipse(x, z, cx, cz, 8, 2.5, angle), BRIGHT)
    elif kind == 1:  # facial profile: forehead, nose and lips as one bright curve
        for k in range(5):
            scene.paint(arc(x, z, cx, cz + 6 * k, 22 - 2 * k, angle, angle + 1.2, 1.5), BRIGHT)
    elif kind == 2:  # longitudinal spine: two rows of vertebral bodies
        for k in range(-6, 7):
            for side in (-1, 1):
                centre = at(cx, cz, angle, 5.0 * k, side * 5.0)
                scene.paint(ellipse(x, z, *centre, 1.8, 1.4), BONE, bone=1.0)
    elif kind == 3:  # placenta along the uterine wall
        scene.paint(
            ellipse(x, z, cx, cz, 60, 14, angle * 0.2, edge=3), 0.5 * texture(scene, rng, 3.0, 0.5)
        )
    else:  # umbilical cord: coiled vessels
        for k in range(6):
            p = at(cx, cz, angle, 7.0 * k - 20, 6 * np.sin(k))
            scene.paint(ellipse(x, z, *p, 4.5, 3.2, angle + k), 0.55)
            scene.paint(ellipse(x, z, *p, 1.6, 1.6), FLUID)


DRAW: dict[Plane, Callable[[Scene, np.random.Generator, float], None]] = {
    Plane.FETAL_ABDOMEN: draw_abdomen,
    Plane.FETAL_FEMUR: draw_femur,
    Plane.FETAL_THORAX: draw_thorax,
    Plane.MATERNAL_CERVIX: draw_cervix,
    Plane.OTHER: draw_other,
}


def build_scene(
    x: Array,
    z: Array,
    plane: Plane,
    brain_plane: BrainPlane | None,
    ga_weeks: float,
    rng: np.random.Generator,
    difficulty: float,
) -> Scene:
    """The reflectivity of one standard plane, sampled at the points (x, z)."""
    scene = Scene(x, z, np.full_like(x, TISSUE), np.zeros_like(x))
    uterus = maternal_layers(scene, rng)
    if plane is not Plane.MATERNAL_CERVIX:
        amniotic_pool(scene, rng, uterus)
    # Harder settings add structures every class shares around the plane of interest, so the
    # cue must be the anatomy itself; they lie behind it, as the sonographer centres the target.
    for _ in range(rng.poisson(1.2 * difficulty)):
        draw_other(scene, rng, ga_weeks)
    if plane is Plane.FETAL_BRAIN:
        draw_brain(scene, rng, ga_weeks, brain_plane)
    else:
        DRAW[plane](scene, rng, ga_weeks)
    # Contrast is compressed in decibels (a power law), as a poorer acoustic window would.
    scene.echo = np.clip(scene.echo, FLUID, 1.0) ** (1.0 - 0.45 * difficulty)
    scene.echo *= texture(scene, rng, 6.0, 0.25)
    return scene
