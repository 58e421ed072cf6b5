"""The trainer service's shell: settings → clients → the training-requests consumer, health.

In the cluster a training run is a Kubernetes Job (`fetalmlops train …`, see deploy/helm); the
service consumes `fetal.training.requested` (the CLI, a schedule, or the monitor's drift alarm)
and runs each request itself, one at a time, committing only once the version is registered,
so a request survives a crash and a replay finds its version instead of training twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from fetalmlops.common.bus import Consumer, Record, Rejected, read_event, retry_policy
from fetalmlops.common.clients import connect
from fetalmlops.common.db import session_scope
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.trainer import catalog, registry
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.requests import config_of, manifest_for, request_for
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.v1 import training_pb2

SERVICE_NAME = "trainer"


@dataclass
class Trainer:
    platform: Platform
    own: TrainerSettings

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, training_pb2.TrainingRequested):
            raise Rejected(f"expected TrainingRequested, got {type(event).__name__}")
        platform = self.platform
        # A drift alarm asks for the drifted version again, on fresh data: its recipe, not
        # the trainer's defaults, unless the request says otherwise.
        parent = event.drift.model_version if event.HasField("drift") else None
        recipe = None
        if parent is not None:
            with session_scope(platform.engine) as session:
                recipe = registry.recipe(session, event.drift.model_name, parent)
        config = config_of(event, recipe)
        entries = catalog.labelled_entries(platform.engine, platform.settings)
        try:
            manifest = manifest_for(
                platform.engine, platform.store, platform.settings, event.snapshot_id,
                event.cohorts, event.held_out_cohorts, config.seed,
            )  # fmt: skip
        except (LookupError, ValueError) as exc:
            raise Rejected(str(exc)) from None
        request = request_for(
            self.own, config, entries, event.held_out_cohorts, event.model_name, event.fold, parent
        )
        run_on_platform(
            platform, manifest, catalog.store_loader(platform.store), request,
            self.own.workdir, progress=False,
        )  # fmt: skip


def build(settings: Settings, own: TrainerSettings | None = None) -> Service:
    own = own or TrainerSettings()
    clients = connect(settings)
    buckets = settings.buckets
    readiness = clients.readiness([buckets.anonymized, buckets.datasets, buckets.models])
    app = create_app("FetalMLOps trainer", readiness)
    trainer = Trainer(Platform.of(settings, clients), own)
    consumer = Consumer(
        [settings.topics.training_requested],
        "trainer",
        trainer.handle,
        deadletter_topic=settings.topics.deadletter,
        retry=retry_policy(settings),
    )
    return Service(settings, app, bus=clients.bus, consumers=[consumer])


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
