"""The trainer service's shell: settings → clients → the training-requests consumer, health.

In the cluster a training run is a Kubernetes Job (`fetalmlops train …`, see deploy/helm); the
service consumes `fetal.training.requested` (the CLI, a schedule, or the monitor's drift alarm)
and runs each request itself, one at a time, committing only once the version is registered
(and, under a change-control plan, judged), so a request survives a crash and a replay finds
its version instead of training twice. The registry follows the rollouts' states
(`fetal.models.rollout`, `stages.Registrar`) in a consumer of its own.

A plan (`FETALMLOPS_TRAINER_PLAN`) is read when the service starts, and one that cannot be read
or governs another model stops it there. A request the plan cannot govern — its sequestered set
missing or not the one the plan's hash fixes, another model, a named snapshot that breaks the
data rules — is `Rejected` with the reason, and so dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

from fetalmlops.changecontrol.plan import ChangeControlPlan, PlanError
from fetalmlops.common.bus import Consumer, Record, Rejected, read_event, retry_policy
from fetalmlops.common.clients import connect
from fetalmlops.common.db import session_scope
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.trainer import catalog, registry
from fetalmlops.trainer.governance import Governance, govern, governing_plan
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.requests import config_of, manifest_for, request_for
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.stages import Registrar
from fetalmlops.v1 import training_pb2

SERVICE_NAME = "trainer"


@dataclass
class Trainer:
    platform: Platform
    own: TrainerSettings
    plan: ChangeControlPlan | None = None

    def handle(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, training_pb2.TrainingRequested):
            raise Rejected(f"expected TrainingRequested, got {type(event).__name__}")
        platform = self.platform
        governance = self.governance(event)
        # A drift alarm asks for the drifted version again, on fresh data: its recipe, not
        # the trainer's defaults, unless the request says otherwise.
        parent = event.drift.model_version if event.HasField("drift") else None
        segment = event.drift.segment if event.HasField("drift") else ""
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
                governance.rules(segment) if governance else None,
            )  # fmt: skip
        except (LookupError, ValueError) as exc:
            raise Rejected(str(exc)) from None
        request = request_for(
            self.own, config, entries, event.held_out_cohorts, event.model_name, event.fold,
            parent, segment,
        )  # fmt: skip
        run_on_platform(
            platform, manifest, catalog.store_loader(platform.store), request,
            self.own.workdir, progress=False, governance=governance,
        )  # fmt: skip

    def governance(self, event: training_pb2.TrainingRequested) -> Governance | None:
        """The plan in force for this request, its sequestered set checked; Rejected when the
        request cannot be governed by it."""
        if self.plan is None:
            return None
        if event.model_name and event.model_name != self.plan.model:
            raise Rejected(
                f"the trainer works under the change-control plan of {self.plan.model!r}: "
                f"it does not train {event.model_name!r}"
            )
        try:
            return govern(self.plan, self.platform.store, self.platform.settings)
        except (LookupError, ValueError) as exc:
            raise Rejected(str(exc)) from None


def build(settings: Settings, own: TrainerSettings | None = None) -> Service:
    own = own or TrainerSettings()
    try:
        plan = governing_plan(own.plan, own.model_name) if own.plan else None
    except PlanError as exc:
        raise SystemExit(f"FETALMLOPS_TRAINER_PLAN: {exc}") from None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    clients = connect(settings)
    buckets = settings.buckets
    readiness = clients.readiness([buckets.anonymized, buckets.datasets, buckets.models])
    app = create_app("FetalMLOps trainer", readiness)
    platform = Platform.of(settings, clients)
    trainer = Trainer(platform, own, plan)
    topics, retry = settings.topics, retry_policy(settings)
    consumers = [
        Consumer([topics.training_requested], "trainer", trainer.handle, topics.deadletter, retry),
        # In a group and a thread of its own: a promotion never waits for a training run.
        Consumer(
            [topics.models_rollout], "trainer-registry", Registrar(platform).handle,
            topics.deadletter, retry,
        ),
    ]  # fmt: skip
    return Service(settings, app, bus=clients.bus, consumers=consumers)


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
