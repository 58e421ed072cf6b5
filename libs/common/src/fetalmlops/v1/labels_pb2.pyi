from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Plane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLANE_UNSPECIFIED: _ClassVar[Plane]
    PLANE_FETAL_ABDOMEN: _ClassVar[Plane]
    PLANE_FETAL_BRAIN: _ClassVar[Plane]
    PLANE_FETAL_FEMUR: _ClassVar[Plane]
    PLANE_FETAL_THORAX: _ClassVar[Plane]
    PLANE_MATERNAL_CERVIX: _ClassVar[Plane]
    PLANE_OTHER: _ClassVar[Plane]

class BrainPlane(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BRAIN_PLANE_UNSPECIFIED: _ClassVar[BrainPlane]
    BRAIN_PLANE_TRANS_THALAMIC: _ClassVar[BrainPlane]
    BRAIN_PLANE_TRANS_CEREBELLUM: _ClassVar[BrainPlane]
    BRAIN_PLANE_TRANS_VENTRICULAR: _ClassVar[BrainPlane]
    BRAIN_PLANE_OTHER: _ClassVar[BrainPlane]
PLANE_UNSPECIFIED: Plane
PLANE_FETAL_ABDOMEN: Plane
PLANE_FETAL_BRAIN: Plane
PLANE_FETAL_FEMUR: Plane
PLANE_FETAL_THORAX: Plane
PLANE_MATERNAL_CERVIX: Plane
PLANE_OTHER: Plane
BRAIN_PLANE_UNSPECIFIED: BrainPlane
BRAIN_PLANE_TRANS_THALAMIC: BrainPlane
BRAIN_PLANE_TRANS_CEREBELLUM: BrainPlane
BRAIN_PLANE_TRANS_VENTRICULAR: BrainPlane
BRAIN_PLANE_OTHER: BrainPlane

class LabelAttached(_message.Message):
    __slots__ = ("meta", "image_id", "raw_sha256", "plane", "brain_plane", "annotator")
    META_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    RAW_SHA256_FIELD_NUMBER: _ClassVar[int]
    PLANE_FIELD_NUMBER: _ClassVar[int]
    BRAIN_PLANE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    image_id: str
    raw_sha256: str
    plane: Plane
    brain_plane: BrainPlane
    annotator: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., image_id: _Optional[str] = ..., raw_sha256: _Optional[str] = ..., plane: _Optional[_Union[Plane, str]] = ..., brain_plane: _Optional[_Union[BrainPlane, str]] = ..., annotator: _Optional[str] = ...) -> None: ...
