"""The canonical label set: the six FETAL_PLANES_DB classes and the fetal-brain sub-planes.

Every dataset reader maps its own label names onto these; the proto enums
(`fetalmlops.v1.Plane`, `fetalmlops.v1.BrainPlane`) and the database use the same members, and a
test keeps the three in step. The order of `Plane` is the class-index order of every model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import cast

from fetalmlops.v1 import labels_pb2


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


# The proto enums number the same members, behind UNSPECIFIED (0), which no member is.
# (The generated stubs type `Value` as a plain int, not as the enum's own type.)
_PROTO_PLANES = {
    plane: cast(labels_pb2.Plane, labels_pb2.Plane.Value(f"PLANE_{plane.name}")) for plane in Plane
}
_PROTO_BRAIN_PLANES = {
    plane: cast(labels_pb2.BrainPlane, labels_pb2.BrainPlane.Value(f"BRAIN_PLANE_{plane.name}"))
    for plane in BrainPlane
}
_PLANES: dict[int, Plane] = {number: plane for plane, number in _PROTO_PLANES.items()}
_BRAIN_PLANES: dict[int, BrainPlane] = {
    number: plane for plane, number in _PROTO_BRAIN_PLANES.items()
}


def plane_to_proto(plane: Plane) -> labels_pb2.Plane:
    return _PROTO_PLANES[plane]


def plane_from_proto(number: int) -> Plane | None:
    """The plane an event names; None for UNSPECIFIED or a number this build does not know."""
    return _PLANES.get(number)


def brain_plane_to_proto(plane: BrainPlane) -> labels_pb2.BrainPlane:
    return _PROTO_BRAIN_PLANES[plane]


def brain_plane_from_proto(number: int) -> BrainPlane | None:
    """The sub-plane an event names; None for UNSPECIFIED or a number this build does not know."""
    return _BRAIN_PLANES.get(number)
