"""The canonical label set: the six FETAL_PLANES_DB classes and the fetal-brain sub-planes.

Every dataset reader maps its own label names onto these; the proto enums
(`fetalmlops.v1.Plane`, `fetalmlops.v1.BrainPlane`) and the database use the same members, and a
test keeps the three in step. The order of `Plane` is the class-index order of every model.
"""

from __future__ import annotations

from enum import StrEnum


class Plane(StrEnum):
    """The six FETAL_PLANES_DB classes (proto `fetalmlops.v1.Plane`)."""

    FETAL_ABDOMEN = "fetal_abdomen"
    FETAL_BRAIN = "fetal_brain"
    FETAL_FEMUR = "fetal_femur"
    FETAL_THORAX = "fetal_thorax"
    MATERNAL_CERVIX = "maternal_cervix"
    OTHER = "other"


class BrainPlane(StrEnum):
    """Sub-planes of fetal-brain images (proto `fetalmlops.v1.BrainPlane`)."""

    TRANS_THALAMIC = "trans_thalamic"
    TRANS_CEREBELLUM = "trans_cerebellum"
    TRANS_VENTRICULAR = "trans_ventricular"
    OTHER = "other"
