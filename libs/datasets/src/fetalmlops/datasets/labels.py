"""Label names used by real datasets, mapped onto the canonical planes.

Names are compared after folding case, spaces, hyphens and underscores, so "Fetal brain",
"fetal_brain" and "FETAL-BRAIN" are one name. Unknown names are errors, never guesses.
"""

from __future__ import annotations

import re

from fetalmlops.common.planes import BrainPlane, Plane

PLANE_NAMES: dict[str, Plane] = {
    **{p.value.replace("_", ""): p for p in Plane},
    "abdomen": Plane.FETAL_ABDOMEN,
    "brain": Plane.FETAL_BRAIN,
    "head": Plane.FETAL_BRAIN,
    "femur": Plane.FETAL_FEMUR,
    "thorax": Plane.FETAL_THORAX,
    "heart": Plane.FETAL_THORAX,
    "cervix": Plane.MATERNAL_CERVIX,
    "others": Plane.OTHER,
}
BRAIN_PLANE_NAMES: dict[str, BrainPlane | None] = {
    **{p.value.replace("_", ""): p for p in BrainPlane},
    "transcerebellar": BrainPlane.TRANS_CEREBELLUM,
    "tt": BrainPlane.TRANS_THALAMIC,
    "tc": BrainPlane.TRANS_CEREBELLUM,
    "tv": BrainPlane.TRANS_VENTRICULAR,
    # FETAL_PLANES_DB marks every image that is not a brain this way.
    "notabrain": None,
    "": None,
}


def fold(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def parse_plane(name: str) -> Plane:
    try:
        return PLANE_NAMES[fold(name)]
    except KeyError:
        raise ValueError(f"unknown plane label {name!r}") from None


def parse_brain_plane(name: str) -> BrainPlane | None:
    try:
        return BRAIN_PLANE_NAMES[fold(name)]
    except KeyError:
        raise ValueError(f"unknown brain plane label {name!r}") from None
