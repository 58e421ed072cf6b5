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

class TrainingRequested(_message.Message):
    __slots__ = ("meta", "request_id", "model_name", "snapshot_id", "backbone", "reason", "strategy", "hyperparameters", "cohorts", "held_out_cohorts", "fold")
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
    def __init__(self, meta: _Optional[_Union[_common_pb2.EventMeta, _Mapping]] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., backbone: _Optional[str] = ..., reason: _Optional[str] = ..., strategy: _Optional[_Union[TrainingStrategy, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., cohorts: _Optional[_Iterable[str]] = ..., held_out_cohorts: _Optional[_Iterable[str]] = ..., fold: _Optional[int] = ...) -> None: ...
