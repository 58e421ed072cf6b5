from fetalmlops.common.planes import BrainPlane, Plane
from fetalmlops.v1 import labels_pb2


def test_canonical_planes_match_the_event_contract() -> None:
    proto_planes = [n for n in labels_pb2.Plane.keys() if n != "PLANE_UNSPECIFIED"]
    assert proto_planes == [f"PLANE_{p.name}" for p in Plane]
    proto_brain = [n for n in labels_pb2.BrainPlane.keys() if n != "BRAIN_PLANE_UNSPECIFIED"]
    assert proto_brain == [f"BRAIN_PLANE_{p.name}" for p in BrainPlane]
