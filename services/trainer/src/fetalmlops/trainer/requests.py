"""A training run asked for through either door: a `TrainingRequested` event the service
consumes, or `fetalmlops train`'s options.

Both doors end here, in the same snapshot choice (`manifest_for`) and the same `Request`
(`request_for`), so a run asked for over Kafka trains, scores and describes exactly what the
same options on the command line would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine

from fetalmlops.common.bus import Rejected
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore
from fetalmlops.datasets.phantom.profiles import PROFILES
from fetalmlops.trainer import catalog
from fetalmlops.trainer.backbones import BACKBONES, Strategy
from fetalmlops.trainer.data_rules import DataRules
from fetalmlops.trainer.job import Request
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import Entry, Filters, Manifest, SplitSpec
from fetalmlops.trainer.training import TrainConfig
from fetalmlops.v1 import training_pb2

STRATEGIES = {
    training_pb2.TRAINING_STRATEGY_UNSPECIFIED: Strategy.FINE_TUNE,
    training_pb2.TRAINING_STRATEGY_FINE_TUNE: Strategy.FINE_TUNE,
    training_pb2.TRAINING_STRATEGY_LINEAR_PROBE: Strategy.LINEAR_PROBE,
}
# The least each hyper-parameter may be (the command's options have the same floors).
FLOORS: dict[str, float] = {
    "epochs": 1, "batch_size": 1, "patience": 1, "learning_rate": 0, "weight_decay": 0,
    "input_size": 32, "seed": 0,
}  # fmt: skip


def config_of(
    event: training_pb2.TrainingRequested, recipe: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The event's configuration over ``recipe`` (a drifted version's, to repeat it) or the
    trainer's defaults; Rejected, with the reason, when a value makes no sense."""
    base = TrainConfig() if recipe is None else TrainConfig.from_dict(recipe)
    backbone = event.backbone or base.backbone
    if backbone not in BACKBONES:
        raise Rejected(f"unknown backbone {backbone!r}")
    if event.strategy not in STRATEGIES:
        raise Rejected(f"unknown strategy {event.strategy}")
    strategy = (
        base.strategy
        if event.strategy == training_pb2.TRAINING_STRATEGY_UNSPECIFIED
        else STRATEGIES[event.strategy]
    )
    given = event.hyperparameters
    values = {name: getattr(given, name) for name in FLOORS if given.HasField(name)}
    for name, value in values.items():
        if value < FLOORS[name]:
            raise Rejected(f"{name} must be at least {FLOORS[name]:g}, not {value:g}")
    return replace(base, backbone=backbone, strategy=strategy, **values)


def request_for(
    own: TrainerSettings,
    config: TrainConfig,
    entries: Sequence[Entry],
    held_out: Sequence[str],
    model_name: str = "",
    fold: int = 0,
    parent_version: int | None = None,
    drift_segment: str = "",
) -> Request:
    """The run: ``held_out`` cohorts among ``entries`` scored as out-of-domain, the card told
    when every image is the phantom's; ``model_name`` empty means the configured one."""
    cohorts = {e.cohort for e in entries}
    return Request(
        model_name=model_name or own.model_name,
        config=config,
        gate=own.gate(),
        country_iso_code=own.country_iso_code,
        out_of_domain={c: [e for e in entries if e.cohort == c] for c in held_out},
        synthetic=bool(cohorts) and cohorts <= PROFILES.keys(),
        fold=fold,
        parent_version=parent_version,
        drift_segment=drift_segment,
    )


def manifest_for(
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    snapshot_id: str | None,
    cohorts: Sequence[str],
    held_out: Sequence[str],
    seed: int,
    rules: DataRules | None = None,
) -> Manifest:
    """The snapshot named, or a fresh one of the catalog: only ``cohorts`` (all when none),
    never ``held_out``. Under a change-control plan's ``rules`` a fresh snapshot holds only what
    they let train, and a named one is refused when it holds anything else. Raises LookupError
    or ValueError when there is no such snapshot, nothing to take one of, or a rule is broken."""
    if snapshot_id:
        manifest = catalog.load_snapshot(store, settings, snapshot_id)
        if rules is not None:
            readings = {e.image_id: r for e, r in catalog.labelled_readings(engine, settings)}
            if broken := rules.violations(manifest, readings):
                raise RuleBroken(snapshot_id, broken)
        return manifest
    filters = Filters(cohorts=tuple(cohorts), exclude_cohorts=tuple(held_out))
    spec = SplitSpec(seed=seed)
    return catalog.take_snapshot(engine, store, settings, "planes", filters, spec, rules)


class RuleBroken(ValueError):
    """A snapshot named for a governed run holds images the plan's data rules forbid."""

    def __init__(self, snapshot_id: str, broken: Mapping[str, str]) -> None:
        reasons = Counter(broken.values())
        listed = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        example = min(broken)
        super().__init__(
            f"snapshot {snapshot_id} breaks the change-control plan's data rules: {listed} "
            f"(e.g. image {example}: {broken[example]}); train on a fresh snapshot instead"
        )
