from fetalmlops.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_STRATEGY_UNSPECIFIED: _ClassVar[TrainingStrategy]
    TRAINING_STRATEGY_FINE_TUNE: _ClassVar[TrainingStrategy]
    TRAINING_STRATEGY_LINEAR_PROBE: _ClassVar[TrainingStrategy]
TRAINING_STRATEGY_UNSPECIFIED: TrainingStrategy
TRAINING_STRATEGY_FINE_TUNE: TrainingStrategy
TRAINING_STRATEGY_LINEAR_PROBE: TrainingStrategy

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "batch_size", "learning_rate", "weight_decay", "patience", "seed", "input_size")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    seed: int
    input_size: int
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., weight_decay: _Optional[float] = ..., patience: _Optional[int] = ..., seed: _Optional[int] = ..., input_size: _Optional[int] = ...) -> None: ...

class DriftAlarm(_message.Message):
    __slots__ = ("model_name", "model_version", "segment", "episode", "window", "test", "statistic", "p_value", "cusum", "threshold")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    CUSUM_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    segment: str
    episode: int
    window: int
    test: str
    statistic: float
    p_value: float
    cusum: float
    threshold: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., segment: _Optional[str] = ..., episode: _Optional[int] = ..., window: _Optional[int] = ..., test: _Optional[str] = ..., statistic: _Optional[float] = ..., p_value: _Optional[float] = ..., cusum: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class TrainingRequested(_message.Message):
    __slots__ = ("meta", "request_id", "model_name", "snapshot_id", "backbone", "reason", "strategy", "hyperparameters", "cohorts", "held_out_cohorts", "fold", "drift")
    META_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    COHORTS_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_COHORTS_FIELD_NUMBER: _ClassVar[int]
    FOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.EventMeta
    request_id: str
    model_name: str
    snapshot_id: str
    backbone: str
    reason: str
    strategy: TrainingStrategy
    hyperparameters: Hyperparameters
    cohorts: _containers.RepeatedScalarFieldContainer[str]
    held_out_cohorts: _containers.RepeatedScalarFieldContainer[str]
    fold: int
    drift: DriftAlarm
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., backbone: _Optional[str] = ..., reason: _Optional[str] = ..., strategy: _Optional[_Union[TrainingStrategy, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., cohorts: _Optional[_Iterable[str]] = ..., held_out_cohorts: _Optional[_Iterable[str]] = ..., fold: _Optional[int] = ..., drift: _Optional[_Union[DriftAlarm, _Mapping]] = ...) -> None: ...
