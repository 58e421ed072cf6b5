import datetime

from fetalmlops.v1 import common_pb2 as _common_pb2
from fetalmlops.v1 import images_pb2 as _images_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Arm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARM_UNSPECIFIED: _ClassVar[Arm]
    ARM_CHAMPION: _ClassVar[Arm]
    ARM_CHALLENGER: _ClassVar[Arm]
    ARM_SHADOW: _ClassVar[Arm]
ARM_UNSPECIFIED: Arm
ARM_CHAMPION: Arm
ARM_CHALLENGER: Arm
ARM_SHADOW: Arm

class PredictionMade(_message.Message):
    __slots__ = ("meta", "request_id", "prediction_id", "model_name", "model_version", "probabilities", "predicted_plane", "embedding_summary", "image_statistics", "device", "latency_ms", "compute_device", "arm", "shadow_of", "challenger_failed")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PLANE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OF_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FAILED_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    request_id: str
    prediction_id: str
    model_name: str
    model_version: int
    probabilities: _containers.ScalarMap[str, float]
    predicted_plane: str
    embedding_summary: _containers.RepeatedScalarFieldContainer[float]
    image_statistics: ImageStatistics
    device: _images_pb2.Device
    latency_ms: float
    compute_device: str
    arm: Arm
    shadow_of: str
    challenger_failed: bool
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., prediction_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., probabilities: _Optional[_Mapping[str, float]] = ..., predicted_plane: _Optional[str] = ..., embedding_summary: _Optional[_Iterable[float]] = ..., image_statistics: _Optional[_Union[ImageStatistics, _Mapping]] = ..., device: _Optional[_Union[_images_pb2.Device, _Mapping]] = ..., latency_ms: _Optional[float] = ..., compute_device: _Optional[str] = ..., arm: _Optional[_Union[Arm, str]] = ..., shadow_of: _Optional[str] = ..., challenger_failed: bool = ...) -> None: ...

class ImageStatistics(_message.Message):
    __slots__ = ("mean", "std", "p05", "p95", "rows", "columns", "dark_fraction")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    P05_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    DARK_FRACTION_FIELD_NUMBER: _ClassVar[int]
    mean: float
    std: float
    p05: float
    p95: float
    rows: int
    columns: int
    dark_fraction: float
    def __init__(self, mean: _Optional[float] = ..., std: _Optional[float] = ..., p05: _Optional[float] = ..., p95: _Optional[float] = ..., rows: _Optional[int] = ..., columns: _Optional[int] = ..., dark_fraction: _Optional[float] = ...) -> None: ...

class InferenceEnergy(_message.Message):
    __slots__ = ("meta", "account_id", "model_name", "model_version", "compute_device", "window_start", "window_end", "energy_joules", "requests", "predictions", "method")
    META_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_DEVICE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    account_id: str
    model_name: str
    model_version: int
    compute_device: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    energy_joules: float
    requests: int
    predictions: int
    method: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., account_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., compute_device: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., energy_joules: _Optional[float] = ..., requests: _Optional[int] = ..., predictions: _Optional[int] = ..., method: _Optional[str] = ...) -> None: ...
