from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelTrained(_message.Message):
    __slots__ = ("meta", "model_name", "version", "storage_uri", "snapshot_id", "metrics", "energy_kwh", "emissions_kg_co2e")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_URI_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    EMISSIONS_KG_CO2E_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    model_name: str
    version: int
    storage_uri: str
    snapshot_id: str
    metrics: _containers.ScalarMap[str, float]
    energy_kwh: float
    emissions_kg_co2e: float
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., storage_uri: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., energy_kwh: _Optional[float] = ..., emissions_kg_co2e: _Optional[float] = ...) -> None: ...

class ModelPromoted(_message.Message):
    __slots__ = ("meta", "model_name", "version", "storage_uri", "previous_version", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_URI_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    model_name: str
    version: int
    storage_uri: str
    previous_version: int
    reason: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., storage_uri: _Optional[str] = ..., previous_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
