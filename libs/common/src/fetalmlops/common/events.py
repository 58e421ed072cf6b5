"""Event envelopes: the one way an event is stamped, named and decoded (DESIGN.md §2).

The classes themselves are generated from proto/fetalmlops/v1 into ``fetalmlops.v1``.
"""

from __future__ import annotations

import uuid

from google.protobuf.message import DecodeError, Message

from fetalmlops.v1 import (
    feedback_pb2,
    images_pb2,
    labels_pb2,
    models_pb2,
    predictions_pb2,
    studies_pb2,
    training_pb2,
)

# The Kafka header that names an event's schema, so a consumer can decode without guessing.
SCHEMA_HEADER = "fetalmlops-schema"

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        studies_pb2.StudyIncoming,
        images_pb2.ImageReceived,
        images_pb2.ImageAnonymized,
        labels_pb2.LabelAttached,
        training_pb2.TrainingRequested,
        models_pb2.ModelTrained,
        models_pb2.ModelPromoted,
        models_pb2.RolloutChanged,
        predictions_pb2.PredictionMade,
        predictions_pb2.InferenceEnergy,
        feedback_pb2.FeedbackGiven,
    )
}


class UnknownSchema(ValueError):
    """A message names a schema this build does not know, or its bytes do not parse."""


def schema_name(event: Message) -> str:
    return str(event.DESCRIPTOR.full_name)


def stamp(event: Message, producer: str) -> Message:
    """Fill ``meta`` (event id, occurred-at, producer) unless the caller already set an id.

    A replay that re-emits a stored event keeps its id, so consumers can recognise it.
    """
    meta = event.meta  # type: ignore[attr-defined]
    if not meta.event_id:
        meta.event_id = str(uuid.uuid4())
        meta.occurred_at.GetCurrentTime()
    if not meta.producer:
        meta.producer = producer
    return event


def decode(value: bytes, schema: str) -> Message:
    cls = EVENT_TYPES.get(schema)
    if cls is None:
        raise UnknownSchema(f"unknown event schema {schema!r}")
    event = cls()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise UnknownSchema(f"payload does not parse as {schema}: {exc}") from exc
    return event
