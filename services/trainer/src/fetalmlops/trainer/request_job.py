"""One training request, in the Job the dispatcher made for it: `python -m
fetalmlops.trainer.request_job` (`fetalmlops train-request` where the CLI is installed).

The request is the `TrainingRequested` the dispatcher read, carried in the environment
(`dispatch.request_env`): its bytes, where it was read and its trace context. It is run by
`Trainer.handle`, the trainer's consumer's own handler, under a consumer span that continues the
request's trace, so a Job trains, registers, gates and announces exactly what the trainer
service would have. The exit status tells the Job what to do next:

- 0: the version is registered (or was already: a retried Job finds it instead of training
  again), and announced.
- `dispatch.REJECTED_EXIT` (65): the request is bad, or the change-control plan refuses it —
  no retry will change that. It is dead-lettered to `fetal.deadletter` as the consumer would
  (group `trainer-job`), the reason goes to the pod's termination message and the log, and the
  dispatcher's podFailurePolicy rule fails the Job at once.
- 1: anything else (the store, the database or the bus down, a crash of the run): the Job's
  backoffLimit retries it, resuming from its checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from google.protobuf.message import DecodeError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from fetalmlops.common.bus import Bus, BusUnavailable, Consumer, Record, Rejected
from fetalmlops.common.bus.consume import consumer_span, deadletter, deadletter_reason
from fetalmlops.common.clients import connect
from fetalmlops.common.events import SCHEMA_HEADER, UnknownSchema, schema_name
from fetalmlops.common.settings import Settings
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.trainer.dispatch import (
    REJECTED_EXIT,
    REQUEST_ENV,
    SOURCE_ENV,
    TRACE_ENV,
    request_id,
)
from fetalmlops.trainer.main import Trainer, plan_of
from fetalmlops.trainer.platform import Platform
from fetalmlops.trainer.settings import SERVICE_NAME, TrainerSettings
from fetalmlops.v1 import training_pb2

log = logging.getLogger(__name__)

JOB_GROUP = "trainer-job"  # the dead letter's consumer group: the Job, not a consumer
FAILED_EXIT = 1
# Where Kubernetes reads a container's termination message from (its default path).
TERMINATION_LOG = Path("/dev/termination-log")


def request_record(environ: Mapping[str, str], topic: str) -> Record:
    """The request the environment carries, as the consumer would have read it; `Rejected`
    when there is none."""
    encoded = environ.get(REQUEST_ENV)
    if not encoded:
        raise Rejected(f"{REQUEST_ENV} is not set: this Job carries no training request")
    try:
        value = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(f"{REQUEST_ENV} is not base64") from None
    source_topic, partition, offset = topic, -1, -1
    parts = environ.get(SOURCE_ENV, "").rsplit(":", 2)
    if len(parts) == 3 and parts[1].lstrip("-").isdigit() and parts[2].lstrip("-").isdigit():
        source_topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
    headers = [(SCHEMA_HEADER, schema_name(training_pb2.TrainingRequested()).encode())]
    headers += [(key, environ[var].encode()) for key, var in TRACE_ENV.items() if var in environ]
    event = training_pb2.TrainingRequested()
    try:
        event.ParseFromString(value)
    except DecodeError:  # Trainer.handle says so again, as UnknownSchema, and it is rejected
        event = training_pb2.TrainingRequested()
    key = request_id(event) or None
    return Record(source_topic, partition, offset, key, value, tuple(headers))


def run_request(
    bus: Bus, consumer: Consumer, record: Record, termination_log: Path = TERMINATION_LOG
) -> int:
    """``consumer``'s handler on ``record``, once; the exit status (the module says which)."""
    with consumer_span(record, consumer.group) as span:
        try:
            consumer.handler(record)
        except (Rejected, UnknownSchema) as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            return rejected(bus, consumer, record, exc, termination_log)
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            reason = deadletter_reason(exc)
            log.error("training run failed; the Job retries it", extra={"reason": reason})
            terminate(termination_log, f"failed, to be retried: {reason}")
            return FAILED_EXIT
    log.info("training request done", extra={"request": record.key})
    return 0


def rejected(
    bus: Bus, consumer: Consumer, record: Record, error: Exception, termination_log: Path
) -> int:
    """Dead-letter a rejected request; `REJECTED_EXIT`, or `FAILED_EXIT` (retry) when the
    dead letter could not be published."""
    reason = deadletter_reason(error)
    try:
        deadletter(bus, consumer, record, error, attempts=1)
    except BusUnavailable:
        log.error("request rejected, but not dead-lettered: the bus is unavailable")
        terminate(termination_log, f"rejected, to be dead-lettered on a retry: {reason}")
        return FAILED_EXIT
    log.error("training request rejected", extra={"reason": reason})
    terminate(termination_log, f"rejected: {reason}")
    return REJECTED_EXIT


def terminate(termination_log: Path, message: str) -> None:
    """The pod's termination message, where Kubernetes provides the file for it."""
    if termination_log.exists():
        termination_log.write_text(message)


def main() -> int:
    """Run the request in this Job's environment with the trainer's settings."""
    settings, own = Settings(service_name=SERVICE_NAME), TrainerSettings()
    configure_logging(settings)
    provider = configure_tracing(settings)
    topics = settings.topics
    try:
        record = request_record(os.environ, topics.training_requested)
    except Rejected as exc:  # nothing to dead-letter: the Job itself is wrong
        log.error("no training request to run", extra={"reason": str(exc)})
        terminate(TERMINATION_LOG, str(exc))
        return REJECTED_EXIT
    clients = connect(settings)
    trainer = Trainer(Platform.of(settings, clients), own, plan_of(own))
    consumer = Consumer([record.topic], JOB_GROUP, trainer.handle, topics.deadletter)
    try:
        return run_request(clients.bus, consumer, record)
    finally:
        clients.bus.close()
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # flushes the run's spans before the pod goes


def command() -> None:
    """Run the training request this Job carries (the dispatcher's environment)."""
    raise SystemExit(main())


if __name__ == "__main__":
    command()
