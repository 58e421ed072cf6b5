"""One phantom frame: the B-mode fan plus the text a scanner burns into its screen.

Technical overlays (device, probe, depth scale) are drawn everywhere; the patient banner (name,
ID, date, institution) only when asked, always above the imaging sector, and every banner line's
box is returned so leak tests know exactly which pixels hold PHI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.datasets.phantom.profiles import ScannerProfile
from fetalmlops.datasets.phantom.ultrasound import Geometry, beamform, geometry, scan_convert

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class BurnedText:
    text: str
    box: Box  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Frame:
    pixels: NDArray[np.uint8]  # rows × cols, greyscale
    geometry: Geometry
    burned_in: tuple[BurnedText, ...]  # PHI drawn into the pixels

    @property
    def region(self) -> Box:
        return self.geometry.region


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render(
    profile: ScannerProfile,
    plane: Plane,
    brain_plane: BrainPlane | None,
    ga_weeks: float,
    difficulty: float,
    rng: np.random.Generator,
    banner: tuple[str, ...] = (),
) -> Frame:
    geo = geometry(profile)
    pixels = scan_convert(
        beamform(profile, geo, plane, brain_plane, ga_weeks, difficulty, rng), profile, geo
    )
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    size = max(10, profile.rows // 45)
    _technical_overlay(draw, profile, geo, ga_weeks, size)
    burned = _banner(draw, banner, geo, size)
    return Frame(np.asarray(image, dtype=np.uint8).copy(), geo, burned)


def _technical_overlay(
    draw: ImageDraw.ImageDraw, profile: ScannerProfile, geo: Geometry, ga_weeks: float, size: int
) -> None:
    font = _font(size)
    weeks, days = int(ga_weeks), round((ga_weeks % 1) * 7) % 7
    lines = (
        profile.device,
        f"{profile.probe} {profile.frequency_mhz:.1f}MHz",
        f"GA {weeks}w{days}d",
    )
    for k, line in enumerate(lines):
        width = draw.textlength(line, font=font)
        draw.text((geo.cols - width - 8, 4 + k * (size + 2)), line, fill=210, font=font)
    x0, y0, x1, _ = geo.region
    # Depth scale: a tick per centimetre right of the sector, labelled every 2 cm.
    for cm in range(int((geo.r_max_mm - geo.r_min_mm) / 10) + 1):
        y = geo.apex_y + (geo.r_min_mm + 10 * cm) / geo.mm_per_pixel
        if y > geo.rows - 2:
            break
        draw.line([(x1 + 6, y), (x1 + (14 if cm % 2 == 0 else 10), y)], fill=200)
        if cm % 2 == 0:
            draw.text((x1 + 17, y - size // 2), str(cm), fill=200, font=_font(max(8, size - 3)))
    draw.ellipse([(x0 + 4, y0), (x0 + 10, y0 + 6)], fill=230)  # probe orientation marker


def _banner(
    draw: ImageDraw.ImageDraw, lines: tuple[str, ...], geo: Geometry, size: int
) -> tuple[BurnedText, ...]:
    font = _font(size)
    burned = []
    y = 4
    for line in lines:
        x0, y0, x1, y1 = (int(v) for v in draw.textbbox((8, y), line, font=font))
        if y1 >= geo.region[1]:
            raise ValueError("the patient banner must stay above the imaging region")
        draw.text((8, y), line, fill=235, font=font)
        burned.append(BurnedText(line, (x0, y0, x1, y1)))
        y += size + 2
    return tuple(burned)
