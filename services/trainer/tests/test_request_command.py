"""`python -m fetalmlops.trainer.request` (`fetalmlops request-training`), the retraining
CronJob's command: one `TrainingRequested` per schedule slot, published once the bus took it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fetalmlops.common.bus import EmbeddedBus, Record, read_event
from fetalmlops.common.bus.kafka import PUBLISH_BOUND_S
from fetalmlops.common.settings import Settings
from fetalmlops.trainer.dispatch import job_name, training_request
from fetalmlops.trainer.request import (
    INVALID_EXIT,
    UNAVAILABLE_EXIT,
    command,
    request_training,
    slot,
)
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.v1 import training_pb2

SETTINGS = Settings()
TOPIC = SETTINGS.topics.training_requested
OWN = TrainerSettings(model_name="fetal-planes")
AT_0305 = datetime(2025, 6, 1, 3, 5, tzinfo=UTC)


def published(bus: EmbeddedBus) -> list[Record]:
    subscription = bus.subscribe([TOPIC], "test-schedule")
    records = subscription.poll(0.2)
    subscription.close()
    return records


def test_one_request_with_the_reason_schedule_and_the_trainers_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = EmbeddedBus(partitions=1)

    status = request_training(bus, SETTINGS, OWN, now=AT_0305)

    assert status == 0
    (record,) = published(bus)
    event = read_event(record)
    assert isinstance(event, training_pb2.TrainingRequested)
    assert event.reason == "schedule" and event.model_name == "fetal-planes"
    assert record.key == event.request_id == "schedule-fetal-planes-2025-06-01-03"
    assert event.meta.producer == "trainer" and event.meta.event_id
    # Nothing else is asked: the trainer's defaults, a fresh snapshot of the whole catalog.
    assert not (event.backbone or event.snapshot_id or event.cohorts or event.held_out_cohorts)
    assert not event.HasField("drift")
    assert capsys.readouterr().out == (
        f"training request schedule-fetal-planes-2025-06-01-03 published on {TOPIC}\n"
    )


def test_a_run_again_within_its_slot_asks_for_the_same_training_job() -> None:
    bus = EmbeddedBus(partitions=1)

    for minute in (5, 59):
        assert request_training(bus, SETTINGS, OWN, now=AT_0305.replace(minute=minute)) == 0
    assert request_training(bus, SETTINGS, OWN, now=AT_0305.replace(hour=4)) == 0

    first, retried, next_hour = published(bus)
    requests = [training_request(r, OWN.model_name) for r in (first, retried, next_hour)]
    # The dispatcher names a Job after its request: a retried slot finds the Job it made.
    assert job_name(requests[0].request_id) == job_name(requests[1].request_id)
    assert job_name(requests[2].request_id) != job_name(requests[0].request_id)
    assert requests[2].request_id == "schedule-fetal-planes-2025-06-01-04"


def test_the_key_and_the_model_options_name_the_slot_and_the_model() -> None:
    bus = EmbeddedBus(partitions=1)
    # The chart passes the CronJob's Job name, which Kubernetes derives from the scheduled time.
    key = "fetalmlops-training-schedule-29143620"

    assert request_training(bus, SETTINGS, OWN, "planes-portable", "resnet18", key, AT_0305) == 0
    assert request_training(bus, SETTINGS, OWN, "planes-portable", "resnet18", "", AT_0305) == 0

    keyed, unkeyed = (read_event(r) for r in published(bus))
    assert isinstance(keyed, training_pb2.TrainingRequested)
    assert keyed.request_id == f"schedule-planes-portable-{key}"
    assert (keyed.model_name, keyed.backbone) == ("planes-portable", "resnet18")
    assert isinstance(unkeyed, training_pb2.TrainingRequested)
    assert unkeyed.request_id == "schedule-planes-portable-2025-06-01-03", "empty: the hour"


@pytest.mark.parametrize(
    ("model", "backbone", "key", "reason"),
    [
        (None, "alexnet", None, "not a backbone"),
        ("planes portable", None, None, "model_name"),
        (None, None, "slot/../1", "key 'slot/../1' is not"),
        ("planes-portable", None, None, "under the change-control plan of 'fetal-planes'"),
    ],
)
def test_a_request_the_trainer_would_refuse_is_not_published(
    model: str | None,
    backbone: str | None,
    key: str | None,
    reason: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = EmbeddedBus(partitions=1)
    own = TrainerSettings(model_name="fetal-planes", plan=tmp_path / "plan.yaml")

    status = request_training(bus, SETTINGS, own, model, backbone, key, AT_0305)

    assert status == INVALID_EXIT
    assert published(bus) == []
    error = capsys.readouterr().err
    assert error.startswith("no training request published: ") and reason in error


def test_a_request_the_bus_did_not_take_fails_for_the_job_to_retry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bus = EmbeddedBus(partitions=1)
    bus.close()

    assert request_training(bus, SETTINGS, OWN, now=AT_0305) == UNAVAILABLE_EXIT

    error = capsys.readouterr().err
    assert "schedule-fetal-planes-2025-06-01-03 not published: the bus did not take it" in error


def test_the_command_refuses_the_embedded_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request on an in-process bus would vanish with the process: refused, not 'published'."""
    monkeypatch.setenv("FETALMLOPS_BUS", "embedded")
    app = typer.Typer()
    app.command()(command)

    result = CliRunner().invoke(app, ["--key", "manual-1"])

    assert result.exit_code == INVALID_EXIT
    assert "FETALMLOPS_BUS is embedded" in result.output


def test_the_module_exits_nonzero_and_says_why_when_kafka_is_down(tmp_path: Path) -> None:
    """The CronJob's command as it runs in the pod, against a Kafka that does not answer."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("FETALMLOPS_")},
        "FETALMLOPS_BUS": "kafka",
        "FETALMLOPS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "FETALMLOPS_LOG_JSON": "false",
        "HOME": str(tmp_path),
    }
    begun = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fetalmlops.trainer.request", "--key", "fetalmlops-schedule-1"],
        env=env, capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    published_after = time.monotonic() - begun

    assert done.returncode == UNAVAILABLE_EXIT, done.stderr
    assert (
        "training request schedule-fetal-planes-fetalmlops-schedule-1 not published: "
        "the bus did not take it"
    ) in done.stderr
    assert done.stdout == ""
    # The import (torch) and one bounded publish; a hung producer would take minutes.
    assert published_after < 120 + PUBLISH_BOUND_S


def test_slots_are_utc_hours() -> None:
    paris = datetime.fromisoformat("2025-06-01T05:30:00+02:00")
    assert slot(paris) == "2025-06-01-03"
