from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StudyIncoming(_message.Message):
    __slots__ = ("meta", "study_instance_uid", "source", "instances")
    class Instance(_message.Message):
        __slots__ = ("sop_instance_uid", "inline", "landing")
        SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
        INLINE_FIELD_NUMBER: _ClassVar[int]
        LANDING_FIELD_NUMBER: _ClassVar[int]
        sop_instance_uid: str
        inline: bytes
        landing: _common_pb2.ObjectRef
        def __init__(self, sop_instance_uid: _Optional[str] = ..., inline: _Optional[bytes] = ..., landing: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    study_instance_uid: str
    source: str
    instances: _containers.RepeatedCompositeFieldContainer[StudyIncoming.Instance]
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., study_instance_uid: _Optional[str] = ..., source: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[StudyIncoming.Instance, _Mapping]]] = ...) -> None: ...
