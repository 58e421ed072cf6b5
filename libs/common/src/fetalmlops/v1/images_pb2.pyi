from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_CHANNEL_UNSPECIFIED: _ClassVar[IngestChannel]
    INGEST_CHANNEL_KAFKA: _ClassVar[IngestChannel]
    INGEST_CHANNEL_STOW_RS: _ClassVar[IngestChannel]
    INGEST_CHANNEL_C_STORE: _ClassVar[IngestChannel]
    INGEST_CHANNEL_REST: _ClassVar[IngestChannel]
    INGEST_CHANNEL_IMPORT: _ClassVar[IngestChannel]
INGEST_CHANNEL_UNSPECIFIED: IngestChannel
INGEST_CHANNEL_KAFKA: IngestChannel
INGEST_CHANNEL_STOW_RS: IngestChannel
INGEST_CHANNEL_C_STORE: IngestChannel
INGEST_CHANNEL_REST: IngestChannel
INGEST_CHANNEL_IMPORT: IngestChannel

class ImageReceived(_message.Message):
    __slots__ = ("meta", "sha256", "raw", "channel", "media_type", "cohort", "context")
    META_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    sha256: str
    raw: _common_pb2.ObjectRef
    channel: IngestChannel
    media_type: str
    cohort: str
    context: _common_pb2.ObjectRef
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., sha256: _Optional[str] = ..., raw: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., channel: _Optional[_Union[IngestChannel, str]] = ..., media_type: _Optional[str] = ..., cohort: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ...) -> None: ...

class ImageAnonymized(_message.Message):
    __slots__ = ("meta", "image_id", "patient_pseudonym", "dicom", "canonical", "device", "geometry", "cohort")
    META_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_PSEUDONYM_FIELD_NUMBER: _ClassVar[int]
    DICOM_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    image_id: str
    patient_pseudonym: str
    dicom: _common_pb2.ObjectRef
    canonical: _common_pb2.ObjectRef
    device: Device
    geometry: Geometry
    cohort: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., image_id: _Optional[str] = ..., patient_pseudonym: _Optional[str] = ..., dicom: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., canonical: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., geometry: _Optional[_Union[Geometry, _Mapping]] = ..., cohort: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("manufacturer", "model")
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    manufacturer: str
    model: str
    def __init__(self, manufacturer: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class Geometry(_message.Message):
    __slots__ = ("rows", "columns", "pixel_spacing_mm")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PIXEL_SPACING_MM_FIELD_NUMBER: _ClassVar[int]
    rows: int
    columns: int
    pixel_spacing_mm: float
    def __init__(self, rows: _Optional[int] = ..., columns: _Optional[int] = ..., pixel_spacing_mm: _Optional[float] = ...) -> None: ...
