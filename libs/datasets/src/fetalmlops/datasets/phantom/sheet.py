"""A contact sheet: a few phantom frames per plane (columns) and scanner profile (rows)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.phantom.frame import render
from fetalmlops.datasets.phantom.profiles import PROFILES

CELL = (240, 180)
LEFT, TOP = 110, 28


def contact_sheet(seed: int = 0, per_cell: int = 2, difficulty: float = 0.5) -> Image.Image:
    planes, profiles = list(Plane), list(PROFILES.values())
    width = LEFT + CELL[0] * len(planes)
    height = TOP + CELL[1] * per_cell * len(profiles)
    sheet = Image.new("L", (width, height), 16)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for column, plane in enumerate(planes):
        draw.text((LEFT + column * CELL[0] + 8, 6), plane.value, fill=240, font=font)
    rng = np.random.default_rng(seed)
    for row, profile in enumerate(profiles):
        y = TOP + row * per_cell * CELL[1]
        draw.text((6, y + 8), profile.name, fill=240, font=font)
        draw.text((6, y + 28), profile.model, fill=170, font=ImageFont.load_default(size=11))
        for k in range(per_cell):
            for column, plane in enumerate(planes):
                brain = list(BrainPlane)[k % 3] if plane is Plane.FETAL_BRAIN else None
                ga = float(rng.uniform(20, 30))
                frame = render(profile, plane, brain, ga, difficulty, rng)
                thumb = Image.fromarray(frame.pixels).resize(CELL, Image.Resampling.BILINEAR)
                sheet.paste(thumb, (LEFT + column * CELL[0], y + k * CELL[1]))
    return sheet
