"""The change-control plan the trainer works under (`FETALMLOPS_TRAINER_PLAN`, `--plan`).

The plan is read once, when the command starts or the service first needs it (the service
checks it at start when its file is already written), and must govern the model the trainer
trains: a plan for another model is a configuration error. Its sequestered test set is loaded
for each run and checked against the plan's content hash, so a run is never judged on (nor
kept away from) a set other than the one agreed; a mismatch refuses the run with the two
hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fetalmlops.changecontrol.plan import ChangeControlPlan, PlanFile, load_plan, plan_digest
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore
from fetalmlops.trainer import catalog
from fetalmlops.trainer.data_rules import DataRules
from fetalmlops.trainer.snapshots import Manifest


class PlanForAnotherModel(ValueError):
    """The plan governs a model this trainer does not train."""


class SequesteredMismatch(ValueError):
    """The sequestered snapshot's content is not the one the plan fixes by its hash."""


def governing_plan(path: Path, model_name: str) -> ChangeControlPlan:
    """The plan at ``path``, which must govern ``model_name``; PlanError when it cannot be read
    or is not valid, PlanForAnotherModel when it governs another model."""
    return governs(load_plan(path), model_name, str(path))


def plan_file(path: Path, model_name: str) -> PlanFile:
    """The service's plan: checked now when its file is written (PlanError,
    PlanForAnotherModel), else read when first needed."""
    plans = PlanFile.at(path)
    if plans.written:
        governs(plans.load(), model_name, str(path))
    return plans


def governs(plan: ChangeControlPlan, model_name: str, source: str) -> ChangeControlPlan:
    """``plan`` when it governs ``model_name``; PlanForAnotherModel otherwise."""
    if plan.model != model_name:
        raise PlanForAnotherModel(
            f"{source} governs the model {plan.model!r}, but this trainer trains {model_name!r} "
            "(FETALMLOPS_TRAINER_MODEL_NAME): give it the plan of its own model"
        )
    return plan


@dataclass(frozen=True)
class Governance:
    """A plan in force, with its sequestered test set loaded and its hash checked."""

    plan: ChangeControlPlan
    digest: str  # `plan_digest`: the rules a verdict was reached by
    sequestered: Manifest

    def rules(self, drift_segment: str = "") -> DataRules:
        """The data rules of a run; ``drift_segment`` names the scanner segment whose drift
        asked for it, left out of training when the plan does not include it."""
        data = self.plan.data
        excluded = "" if data.include_drifted_segment else drift_segment
        return DataRules(self.sequestered, data.min_agreeing_annotators, excluded)


def govern(plan: ChangeControlPlan, store: ObjectStore, settings: Settings) -> Governance:
    """``plan`` with its sequestered snapshot read from the datasets bucket; UnknownSnapshot
    when there is none by that id, SequesteredMismatch when its content hash is not the plan's."""
    wanted = plan.data.sequestered_test
    sequestered = catalog.load_snapshot(store, settings, wanted.snapshot_id)
    if sequestered.sha256 != wanted.sha256:
        raise SequesteredMismatch(
            f"the sequestered test set {wanted.snapshot_id} has content sha256 "
            f"{sequestered.sha256}, not the {wanted.sha256} that plan {plan.plan_version} of "
            f"{plan.model} fixes: the set was changed, or the plan names another one"
        )
    return Governance(plan, plan_digest(plan), sequestered)
