from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.v1 import labels_pb2


def test_canonical_planes_match_the_event_contract() -> None:
    proto_planes = [v.name for v in labels_pb2.Plane.DESCRIPTOR.values][1:]
    assert proto_planes == [f"PLANE_{p.name}" for p in Plane]
    proto_brain = [v.name for v in labels_pb2.BrainPlane.DESCRIPTOR.values][1:]
    assert proto_brain == [f"BRAIN_PLANE_{p.name}" for p in BrainPlane]
