"""The trainer service's shell: settings → clients → the training-requests consumer, health.

In the cluster a training run is a Kubernetes Job (`fetalmlops train …`, see deploy/helm); the
service consumes `fetal.training.requested` (the CLI, a schedule, or the monitor's drift alarm)
and runs each request itself, one at a time, committing only once the version is registered,
so a request survives a crash and a replay finds its version instead of training twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fetalmlops.common.bus import Consumer, Record, Rejected, open_bus, read_event, retry_policy
from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.service import Service, buckets_ready, create_app, database_ready, run
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.trainer import catalog
from fetalmlops.trainer.backbones import BACKBONES, Strategy
from fetalmlops.trainer.job import Request
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import Filters, SplitSpec
from fetalmlops.trainer.training import TrainConfig
from fetalmlops.v1 import training_pb2

SERVICE_NAME = "trainer"
# The proto's strategy names (training.proto) and ours.
STRATEGIES = {
    "": Strategy.FINE_TUNE,
    "full_finetune": Strategy.FINE_TUNE,
    Strategy.FINE_TUNE.value: Strategy.FINE_TUNE,
    Strategy.LINEAR_PROBE.value: Strategy.LINEAR_PROBE,
}
NUMBERS = {"epochs": int, "batch_size": int, "patience": int, "seed": int, "input_size": int,
           "learning_rate": float, "weight_decay": float}  # fmt: skip


def config_of(event: training_pb2.TrainingRequested) -> TrainConfig:
    """The request's configuration; Rejected, with the reason, when a value makes no sense."""
    backbone = event.backbone or "tiny"
    if backbone not in BACKBONES:
        raise Rejected(f"unknown backbone {backbone!r}")
    if event.strategy not in STRATEGIES:
        raise Rejected(f"unknown strategy {event.strategy!r}")
    values: dict[str, int | float] = {}
    for name, text in event.parameters.items():
        if name not in NUMBERS:
            continue
        try:
            values[name] = NUMBERS[name](text)
        except ValueError:
            raise Rejected(f"parameter {name}={text!r} is not a number") from None
    return TrainConfig(
        backbone=backbone,
        strategy=STRATEGIES[event.strategy],
        **values,  # type: ignore[arg-type]
    )


def cohorts(parameters: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(c for c in parameters.get(name, "").split(",") if c)


@dataclass
class Trainer:
    platform: Platform
    own: TrainerSettings

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, training_pb2.TrainingRequested):
            raise Rejected(f"expected TrainingRequested, got {type(event).__name__}")
        config = config_of(event)
        platform, held_out = self.platform, cohorts(event.parameters, "ood_cohorts")
        entries = catalog.labelled_entries(platform.engine, platform.settings)
        try:
            if event.snapshot_id:
                manifest = catalog.load_snapshot(
                    platform.store, platform.settings, event.snapshot_id
                )
            else:
                filters = Filters(
                    cohorts=cohorts(event.parameters, "cohorts"), exclude_cohorts=held_out
                )
                manifest = catalog.take_snapshot(
                    platform.engine, platform.store, platform.settings, "planes", filters,
                    SplitSpec(seed=config.seed),
                )  # fmt: skip
        except (LookupError, ValueError) as exc:
            raise Rejected(str(exc)) from None
        request = Request(
            model_name=event.model_name or self.own.model_name,
            config=config,
            gate=self.own.gate(),
            country_iso_code=self.own.country_iso_code,
            out_of_domain={c: [e for e in entries if e.cohort == c] for c in held_out},
        )
        run_on_platform(
            platform, manifest, catalog.store_loader(platform.store), request,
            self.own.workdir, progress=False,
        )  # fmt: skip


def build(settings: Settings, own: TrainerSettings | None = None) -> Service:
    own = own or TrainerSettings()
    store = open_store(settings)
    engine = create_engine_for(settings.database_url)
    bus = open_bus(settings)
    readiness = {
        "object-store": buckets_ready(
            store, [settings.buckets.anonymized, settings.buckets.datasets, settings.buckets.models]
        ),
        "database": database_ready(engine),
    }
    app = create_app("FetalMLOps trainer", readiness)
    trainer = Trainer(Platform(settings, store, bus, engine), own)
    consumer = Consumer(
        [settings.topics.training_requested],
        "trainer",
        trainer.handle,
        deadletter_topic=settings.topics.deadletter,
        retry=retry_policy(settings),
    )
    return Service(settings, app, bus=bus, consumers=[consumer])


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
