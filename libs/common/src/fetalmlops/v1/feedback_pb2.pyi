from fetalmlops.v1 import common_pb2 as _common_pb2
from fetalmlops.v1 import labels_pb2 as _labels_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackGiven(_message.Message):
    __slots__ = ("meta", "prediction_id", "true_plane", "true_brain_plane", "reviewer")
    META_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRUE_PLANE_FIELD_NUMBER: _ClassVar[int]
    TRUE_BRAIN_PLANE_FIELD_NUMBER: _ClassVar[int]
    REVIEWER_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    prediction_id: str
    true_plane: _labels_pb2.Plane
    true_brain_plane: _labels_pb2.BrainPlane
    reviewer: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., prediction_id: _Optional[str] = ..., true_plane: _Optional[_Union[_labels_pb2.Plane, str]] = ..., true_brain_plane: _Optional[_Union[_labels_pb2.BrainPlane, str]] = ..., reviewer: _Optional[str] = ...) -> None: ...
