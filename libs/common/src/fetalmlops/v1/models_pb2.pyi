from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_MODE_UNSPECIFIED: _ClassVar[RolloutMode]
    ROLLOUT_MODE_SHADOW: _ClassVar[RolloutMode]
    ROLLOUT_MODE_CANARY: _ClassVar[RolloutMode]
ROLLOUT_MODE_UNSPECIFIED: RolloutMode
ROLLOUT_MODE_SHADOW: RolloutMode
ROLLOUT_MODE_CANARY: RolloutMode

class ModelTrained(_message.Message):
    __slots__ = ("meta", "model_name", "version", "storage_uri", "snapshot_id", "metrics", "energy_kwh", "emissions_kg_co2e", "parent_version", "gate")
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
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    model_name: str
    version: int
    storage_uri: str
    snapshot_id: str
    metrics: _containers.ScalarMap[str, float]
    energy_kwh: float
    emissions_kg_co2e: float
    parent_version: int
    gate: GateVerdict
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., version: _Optional[int] = ..., storage_uri: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., energy_kwh: _Optional[float] = ..., emissions_kg_co2e: _Optional[float] = ..., parent_version: _Optional[int] = ..., gate: _Optional[_Union[GateVerdict, _Mapping]] = ...) -> None: ...

class GateCheck(_message.Message):
    __slots__ = ("name", "value", "bound", "passed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    bound: float
    passed: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., bound: _Optional[float] = ..., passed: bool = ...) -> None: ...

class GateVerdict(_message.Message):
    __slots__ = ("passed", "checks", "plan_version", "plan_digest", "champion_version", "sequestered_snapshot_id", "images")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUESTERED_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    checks: _containers.RepeatedCompositeFieldContainer[GateCheck]
    plan_version: str
    plan_digest: str
    champion_version: int
    sequestered_snapshot_id: str
    images: int
    def __init__(self, passed: bool = ..., checks: _Optional[_Iterable[_Union[GateCheck, _Mapping]]] = ..., plan_version: _Optional[str] = ..., plan_digest: _Optional[str] = ..., champion_version: _Optional[int] = ..., sequestered_snapshot_id: _Optional[str] = ..., images: _Optional[int] = ...) -> None: ...

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

class RolloutChanged(_message.Message):
    __slots__ = ("meta", "model_name", "champion_version", "champion_storage_uri", "challenger_version", "challenger_storage_uri", "mode", "canary_fraction", "sequence", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_STORAGE_URI_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_STORAGE_URI_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    model_name: str
    champion_version: int
    champion_storage_uri: str
    challenger_version: int
    challenger_storage_uri: str
    mode: RolloutMode
    canary_fraction: float
    sequence: int
    reason: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., model_name: _Optional[str] = ..., champion_version: _Optional[int] = ..., champion_storage_uri: _Optional[str] = ..., challenger_version: _Optional[int] = ..., challenger_storage_uri: _Optional[str] = ..., mode: _Optional[_Union[RolloutMode, str]] = ..., canary_fraction: _Optional[float] = ..., sequence: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
