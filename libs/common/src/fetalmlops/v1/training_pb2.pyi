from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingRequested(_message.Message):
    __slots__ = ("meta", "request_id", "model_name", "snapshot_id", "backbone", "strategy", "reason", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    request_id: str
    model_name: str
    snapshot_id: str
    backbone: str
    strategy: str
    reason: str
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., backbone: _Optional[str] = ..., strategy: _Optional[str] = ..., reason: _Optional[str] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...
