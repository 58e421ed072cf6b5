from fetalmlops.common.planes import (
    BrainPlane,
    Plane,
    brain_plane_from_proto,
    brain_plane_to_proto,
    plane_from_proto,
    plane_to_proto,
)
from fetalmlops.v1 import labels_pb2


def test_canonical_planes_match_the_event_contract() -> None:
    proto_planes = [v.name for v in labels_pb2.Plane.DESCRIPTOR.values][1:]
    assert proto_planes == [f"PLANE_{p.name}" for p in Plane]
    proto_brain = [v.name for v in labels_pb2.BrainPlane.DESCRIPTOR.values][1:]
    assert proto_brain == [f"BRAIN_PLANE_{p.name}" for p in BrainPlane]


def test_each_plane_goes_to_its_proto_number_and_back() -> None:
    assert [plane_to_proto(p) for p in Plane] == list(range(1, len(Plane) + 1))
    assert [plane_from_proto(plane_to_proto(p)) for p in Plane] == list(Plane)
    assert [brain_plane_from_proto(brain_plane_to_proto(p)) for p in BrainPlane] == list(BrainPlane)
    assert plane_from_proto(labels_pb2.PLANE_UNSPECIFIED) is None
    assert brain_plane_from_proto(labels_pb2.BRAIN_PLANE_UNSPECIFIED) is None
    assert plane_from_proto(99) is None  # a newer build's plane
