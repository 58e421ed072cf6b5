"""A scheduled training request: `python -m fetalmlops.trainer.request` (`fetalmlops
request-training` where the CLI is installed), the command of the chart's retraining CronJob.

It publishes one `TrainingRequested` on `fetal.training.requested` with the reason ``schedule``,
built and checked as `POST /v1/training-requests` builds and checks one (`api.TrainingRequestBody`,
then the consumer's own `requests.config_of`), and returns once the broker has acknowledged it
(acks=all, `KafkaBus.publish`), so whichever consumes the topic, the dispatcher or the trainer,
will have it. The exit status tells the CronJob's Job what to do next:

- 0: published.
- `UNAVAILABLE_EXIT` (1): the bus did not take it; the Job's backoffLimit runs it again.
- `INVALID_EXIT` (2): the request or the configuration is wrong (an unknown backbone, a model the
  change-control plan does not govern, the embedded bus, on which no trainer would hear it); no
  run of the same command will do better.

The request id is the schedule slot's, not a fresh one: ``schedule-<model>-<key>``, the key being
`--key` (the chart passes the name of the CronJob's Job, which Kubernetes derives from the
scheduled time) or else the current UTC date and hour. A run retried within its slot publishes
the same request again, and the dispatcher, which names each training Job after its request id,
makes one Job of it (DESIGN.md §2: the same input, the same key, the same output).
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from fetalmlops.common.bus import Bus, BusUnavailable, Rejected, open_bus, publish_event
from fetalmlops.common.settings import Backend, Settings
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.trainer.api import TrainingRequestBody
from fetalmlops.trainer.requests import config_of
from fetalmlops.trainer.settings import SERVICE_NAME, TrainerSettings
from fetalmlops.v1 import training_pb2

log = logging.getLogger(__name__)

REASON = "schedule"  # proto/fetalmlops/v1/training.proto: cli, api, schedule, drift
UNAVAILABLE_EXIT = 1
INVALID_EXIT = 2
# The key ends up in the request id, a Kafka key, and a Job's name and labels (`dispatch.job_name`).
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class InvalidRequest(ValueError):
    """What no retry changes: the request itself, or the configuration it is published with."""


def slot(now: datetime) -> str:
    """The key of the UTC hour ``now`` falls in, e.g. ``2025-06-01-03``."""
    return now.astimezone(UTC).strftime("%Y-%m-%d-%H")


def scheduled_request(
    own: TrainerSettings, model: str | None, backbone: str | None, key: str
) -> training_pb2.TrainingRequested:
    """The request of slot ``key`` for ``model`` (none: the trainer's), refused as the HTTP door
    refuses one; `InvalidRequest` with the reason."""
    model_name = model or own.model_name
    if not KEY.fullmatch(key):
        raise InvalidRequest(
            f"key {key!r} is not 1 to 128 letters, digits, '.', '_', ':' or '-' "
            "(starting with a letter or digit)"
        )
    try:
        body = TrainingRequestBody(model_name=model_name, backbone=backbone)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidRequest(problems) from None
    event = body.event(f"{REASON}-{model_name}-{key}")
    event.reason = REASON
    try:
        config_of(event)  # what the consumer would refuse, refused before it is published
    except Rejected as exc:
        raise InvalidRequest(str(exc)) from None
    # The trainer's plan governs its own model and no other (`api.add_routes`, `main.Trainer`).
    if own.plan is not None and model_name != own.model_name:
        raise InvalidRequest(
            f"the trainer works under the change-control plan of {own.model_name!r}: "
            f"it trains no other model, not {model_name!r}"
        )
    return event


def request_training(
    bus: Bus,
    settings: Settings,
    own: TrainerSettings,
    model: str | None = None,
    backbone: str | None = None,
    key: str | None = None,
    now: datetime | None = None,
) -> int:
    """Publish the request of slot ``key`` (none or empty: the hour of ``now``) on ``bus``, say
    what happened, and return the exit status (the module says which)."""
    try:
        event = scheduled_request(own, model, backbone, key or slot(now or datetime.now(UTC)))
    except InvalidRequest as exc:
        typer.echo(f"no training request published: {exc}", err=True)
        return INVALID_EXIT
    topic = settings.topics.training_requested
    try:
        publish_event(bus, topic, event.request_id, event, SERVICE_NAME)
    except BusUnavailable as exc:
        typer.echo(
            f"training request {event.request_id} not published: the bus did not take it "
            f"({exc}); running the same command again is safe",
            err=True,
        )
        return UNAVAILABLE_EXIT
    log.info(
        "training request published",
        extra={"request": event.request_id, "model": event.model_name, "topic": topic},
    )
    typer.echo(f"training request {event.request_id} published on {topic}")
    return 0


def main(model: str | None = None, backbone: str | None = None, key: str | None = None) -> int:
    """Publish the request with the trainer's settings (FETALMLOPS_*); the exit status."""
    settings, own = Settings(), TrainerSettings()
    if "service_name" not in settings.model_fields_set:
        # Logs and spans are the trainer's unless the process is named (the chart's CronJob is
        # `training-schedule`); the event's producer is the trainer either way.
        settings = settings.model_copy(update={"service_name": SERVICE_NAME})
    if settings.bus is not Backend.KAFKA:
        typer.echo(
            "no training request published: FETALMLOPS_BUS is embedded, and a request on an "
            "in-process bus reaches no trainer; set FETALMLOPS_BUS=kafka, or POST "
            "/v1/training-requests to the running trainer",
            err=True,
        )
        return INVALID_EXIT
    configure_logging(settings, stream=sys.stderr)  # stdout says what was published
    provider = configure_tracing(settings)
    bus = open_bus(settings)
    try:
        return request_training(bus, settings, own, model, backbone, key)
    finally:
        bus.close()
        if isinstance(provider, TracerProvider):
            provider.shutdown()  # flushes the publish span before the pod goes


def command(
    model: Annotated[
        str | None,
        typer.Option(
            help="Registry name of the model to train; default: FETALMLOPS_TRAINER_MODEL_NAME."
        ),
    ] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Backbone to train; default: the trainer's.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="The schedule slot: runs with the same key publish the same request; "
            "default: the current UTC date and hour."
        ),
    ] = None,
) -> None:
    """Publish one scheduled training request and wait for the broker to acknowledge it."""
    raise typer.Exit(main(model, backbone, key))


if __name__ == "__main__":
    typer.run(command)
