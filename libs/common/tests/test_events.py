import pytest
from google.protobuf.message import Message

from fetalmlops.common.events import EVENT_TYPES, UnknownSchema, decode, schema_name, stamp
from fetalmlops.v1 import (
    feedback_pb2,
    images_pb2,
    labels_pb2,
    models_pb2,
    predictions_pb2,
    studies_pb2,
    training_pb2,
)

MODULES = [
    feedback_pb2,
    images_pb2,
    labels_pb2,
    models_pb2,
    predictions_pb2,
    studies_pb2,
    training_pb2,
]


def test_every_event_message_in_the_contracts_is_registered() -> None:
    # An event is a top-level message carrying EventMeta; forgetting to register one would make
    # consumers dead-letter it as an unknown schema.
    declared = {
        message.full_name
        for module in MODULES
        for message in module.DESCRIPTOR.message_types_by_name.values()
        if "meta" in message.fields_by_name
    }
    assert declared == set(EVENT_TYPES)
    assert len(declared) == 11


def test_stamp_sets_id_time_and_producer_once() -> None:
    event = stamp(images_pb2.ImageReceived(sha256="ab"), "ingest")
    first_id = event.meta.event_id
    assert len(first_id) == 36 and event.meta.occurred_at.seconds > 0
    assert event.meta.producer == "ingest"
    stamp(event, "replayer")
    assert (event.meta.event_id, event.meta.producer) == (first_id, "ingest")


def test_decode_round_trips_by_schema_name() -> None:
    event: Message = labels_pb2.LabelAttached(image_id="img", plane=labels_pb2.PLANE_FETAL_FEMUR)
    decoded = decode(event.SerializeToString(), schema_name(event))
    assert decoded == event
    assert schema_name(event) == "fetalmlops.v1.LabelAttached"


@pytest.mark.parametrize(
    ("payload", "schema", "reason"),
    [
        (b"", "fetalmlops.v1.Nope", "unknown event schema"),
        (b"\xff\xff\xff", "fetalmlops.v1.ImageReceived", "does not parse"),
    ],
)
def test_unknown_schema_or_garbage_is_refused(payload: bytes, schema: str, reason: str) -> None:
    with pytest.raises(UnknownSchema, match=reason):
        decode(payload, schema)
