"""The trainer service's shell: settings → clients → the training-requests consumer, its HTTP
door (`api`) and health.

The service consumes `fetal.training.requested` (the CLI, a schedule, the monitor's drift
alarm, or a client of `POST /v1/training-requests`, which needs FETALMLOPS_TRAINER_TOKENS to
listen beyond loopback) and runs each request itself, one at a time, committing only once the
version is registered (and, under a change-control plan, judged), so a request survives a crash
and a replay finds its version instead of training twice. On Kubernetes no long-lived pod
trains: FETALMLOPS_TRAINER_RUN_REQUESTS=false leaves the requests to the dispatcher
(`dispatch`), which makes each a Job that runs it through this same `Trainer.handle`
(`request_job`). The registry follows the rollouts' states
(`fetal.models.rollout`, `stages.Registrar`) in a consumer of its own.

A plan (`FETALMLOPS_TRAINER_PLAN`) already written when the service starts is read then, and
one that cannot be read or governs another model stops it there; one written later (a platform
started before its sequestered set existed) is read at the first request (`PlanFile`). A
request the plan cannot govern — the plan missing or invalid, its sequestered set missing or not
the one the plan's hash fixes, another model, a named snapshot that breaks the data rules — is
`Rejected` with the reason, and so dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

from fetalmlops.changecontrol.plan import PlanError, PlanFile
from fetalmlops.common.bearer import is_loopback
from fetalmlops.common.bus import Consumer, Record, Rejected, read_event, retry_policy
from fetalmlops.common.clients import Clients, connect
from fetalmlops.common.db import session_scope
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.trainer import catalog, registry
from fetalmlops.trainer.api import add_routes
from fetalmlops.trainer.governance import Governance, govern, governs, plan_file
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.requests import config_of, manifest_for, request_for
from fetalmlops.trainer.settings import SERVICE_NAME, TrainerSettings
from fetalmlops.trainer.stages import Registrar
from fetalmlops.v1 import training_pb2


@dataclass
class Trainer:
    platform: Platform
    own: TrainerSettings
    plan: PlanFile | None = None

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
        try:
            plan = governs(self.plan.load(), self.own.model_name, "FETALMLOPS_TRAINER_PLAN")
        except (PlanError, ValueError) as exc:
            raise Rejected(f"no change-control plan to train under: {exc}") from None
        if event.model_name and event.model_name != plan.model:
            raise Rejected(
                f"the trainer works under the change-control plan of {plan.model!r}: "
                f"it does not train {event.model_name!r}"
            )
        try:
            return govern(plan, self.platform.store, self.platform.settings)
        except (LookupError, ValueError) as exc:
            raise Rejected(str(exc)) from None


def build(
    settings: Settings, own: TrainerSettings | None = None, clients: Clients | None = None
) -> Service:
    """The service on ``clients`` (default: those ``settings`` configure)."""
    own = own or TrainerSettings()
    plan = plan_of(own)
    if not own.tokens and not is_loopback(settings.http_host):
        raise SystemExit(
            "the trainer's training requests need FETALMLOPS_TRAINER_TOKENS to listen beyond "
            "loopback"
        )
    clients = clients or connect(settings)
    buckets = settings.buckets
    readiness = clients.readiness([buckets.anonymized, buckets.datasets, buckets.models])
    app = create_app("FetalMLOps trainer", readiness)
    add_routes(app, clients.bus, settings, own)
    platform = Platform.of(settings, clients)
    trainer = Trainer(platform, own, plan)
    topics, retry = settings.topics, retry_policy(settings)
    # Without `run_requests` each request is a Job of the dispatcher's (`dispatch`).
    training = [
        Consumer([topics.training_requested], "trainer", trainer.handle, topics.deadletter, retry)
    ]
    consumers = [
        *(training if own.run_requests else []),
        # In a group and a thread of its own: a promotion never waits for a training run.
        Consumer(
            [topics.models_rollout], "trainer-registry", Registrar(platform).handle,
            topics.deadletter, retry,
        ),
    ]  # fmt: skip
    return Service(settings, app, bus=clients.bus, consumers=consumers)


def plan_of(own: TrainerSettings) -> PlanFile | None:
    """The plan FETALMLOPS_TRAINER_PLAN names, if any; SystemExit when it cannot govern the
    trainer's model."""
    try:
        return None if own.plan is None else plan_file(own.plan, own.model_name)
    except PlanError as exc:
        raise SystemExit(f"FETALMLOPS_TRAINER_PLAN: {exc}") from None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
