"""The predetermined change-control plan: what the loop may change on its own, and how.

Modelled on the FDA's guidance on a Predetermined Change Control Plan for AI-enabled device
software functions (2024): the modifications the manufacturer will make without a new
submission, the protocol by which each is developed and validated, and the assessment of its
impact. Here that is one versioned YAML document per model, checked field by field: the
changes allowed (`allowed_changes`), which data may train and which may judge (`data`), the
bar a challenger must clear on the sequestered test set (`acceptance`), how it reaches
patients (`rollout`) and who signs it off (`approval`).

The field docstrings are the plan's documentation; `deploy/change-control/plan.yaml` is the
project's example. `plan_digest` names the plan a decision was taken under, so that the audit
trail can cite it and anyone can check which rules a model was promoted by.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from fetalmlops.common.planes import Plane

Change = Literal["retrain", "recalibrate"]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1)]


class PlanError(ValueError):
    """A plan that cannot be read or does not validate; each problem is one line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source} is not a valid change-control plan:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))


class _Frozen(BaseModel):
    # A plan is a record of what was agreed: nothing changes it after loading, and a field
    # this code does not know (a typo, a newer plan) is refused rather than silently ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")


class SequesteredTest(_Frozen):
    snapshot_id: Name
    """The dataset snapshot that is the sequestered test set, as the archive names it."""
    sha256: Sha256
    """SHA-256 (lower-case hex) of the snapshot's content: the set judged on is the one agreed,
    and no image of it ever trains a model."""


class Data(_Frozen):
    min_agreeing_annotators: int = Field(ge=1)
    """A label may train a model only when at least this many annotators gave it."""
    sequestered_test: SequesteredTest
    """The content-hashed test set every challenger and its champion are scored on."""
    include_drifted_segment: bool = True
    """Whether retraining may use images from the scanner segment whose drift started it;
    without them the new model cannot learn the shift it is meant to answer."""


class StopRules(_Frozen):
    max_macro_f1_drop: Share
    """Roll back when the challenger's macro-F1 on feedback falls this far below the champion's."""
    max_disagreement: Share
    """Roll back when the challenger and champion disagree on more than this share of images."""
    max_error_rate: Share
    """Roll back when more than this share of the challenger's requests fail."""


class Acceptance(_Frozen):
    macro_f1_non_inferiority_margin: float = Field(ge=0.0, le=0.2)
    """How much macro-F1 the challenger may lose against the champion: the lower one-sided
    bootstrap confidence bound of (challenger − champion) macro-F1 on the sequestered test set
    must be at least −margin."""
    confidence: float = Field(gt=0.5, lt=1.0)
    """The one-sided confidence level of that bound, e.g. 0.95."""
    bootstrap_resamples: int = Field(ge=200)
    """How many paired bootstrap resamples of the sequestered test set give the bound; fewer
    than 200 leave its tail quantile too noisy to decide on."""
    recall_floors: dict[Plane, Share]
    """The challenger's lowest acceptable recall for each of the six planes, keyed by the
    plane's value: a good average must not hide a plane the model no longer recognises."""
    segment_macro_f1_floor: Share
    """The challenger's lowest acceptable macro-F1 within each scanner segment of the test set:
    no scanner's patients may be served worse than the floor."""
    ece_ceiling: Share
    """The challenger's highest acceptable expected calibration error (15 bins, top class):
    clinicians read its confidence, so it must mean what it says."""
    latency_p95_ms_ceiling: float = Field(gt=0.0)
    """The challenger's highest acceptable 95th-percentile inference latency, milliseconds."""

    @field_validator("recall_floors", mode="before")
    @classmethod
    def _every_plane_once(cls, floors: Any) -> Any:
        # Checked before the keys become `Plane`s, so that one message names every missing and
        # every unknown plane rather than one enum error per key.
        if not isinstance(floors, Mapping):
            return floors
        given = {str(key) for key in floors}
        planes = {plane.value for plane in Plane}
        problems = []
        if missing := sorted(planes - given):
            problems.append(f"missing planes: {', '.join(missing)}")
        if unknown := sorted(given - planes):
            problems.append(f"unknown planes: {', '.join(unknown)}")
        if problems:
            expected = ", ".join(plane.value for plane in Plane)
            raise ValueError(f"{'; '.join(problems)} (a floor for each of: {expected})")
        return floors


class Rollout(_Frozen):
    shadow: bool
    """Whether the challenger first runs in shadow: scored on live traffic, answering no one."""
    shadow_min_predictions: int = Field(ge=0)
    """How many shadow predictions it must make before the canary starts."""
    canary_fraction: float = Field(gt=0.0, lt=1.0)
    """The share of live requests the challenger answers during the canary."""
    min_predictions: int = Field(ge=1)
    """How many canary predictions the challenger must make before it may be promoted."""
    min_feedback: int = Field(ge=0)
    """How many of those must have a clinician's confirmed plane before it may be promoted."""
    max_duration_hours: float = Field(gt=0.0)
    """How long the canary may run; one that has not met its minimums by then is rolled back."""
    stop_rules: StopRules
    """When the challenger's arm exceeds any of these, it is rolled back at once."""


class Approval(_Frozen):
    required: bool
    """Whether a person must approve the promotion after the canary passes."""
    approvers: list[Name]
    """The names (people or roles) allowed to approve; each must approve when required."""

    @field_validator("approvers")
    @classmethod
    def _no_repeats(cls, approvers: list[str]) -> list[str]:
        # "Two approvers" that are one name twice would be one person signing twice.
        if repeated := sorted({name for name in approvers if approvers.count(name) > 1}):
            raise ValueError(f"approvers named more than once: {', '.join(repeated)}")
        return approvers

    @model_validator(mode="after")
    def _someone_may_approve(self) -> Approval:
        if self.required and not self.approvers:
            raise ValueError("approval is required but no approvers are named")
        return self


class ChangeControlPlan(_Frozen):
    plan_version: Name
    """The plan's own version, e.g. "2026.1"; a changed plan is a new version."""
    model: Name
    """The name of the model this plan governs, as the registry knows it."""
    allowed_changes: list[Change]
    """What the loop may do without a person: ``retrain`` the same architecture on new data,
    ``recalibrate`` its temperature. Anything else needs a new plan."""
    data: Data
    """Which labels may train, and the test set that judges."""
    acceptance: Acceptance
    """The bar a challenger must clear against the champion before any rollout."""
    rollout: Rollout
    """How an accepted challenger reaches patients, and when it is rolled back."""
    approval: Approval
    """Who signs off the promotion."""

    @field_validator("allowed_changes")
    @classmethod
    def _each_change_once(cls, changes: list[Change]) -> list[Change]:
        if len(set(changes)) != len(changes):
            raise ValueError(f"a change is listed more than once: {changes}")
        return changes


def parse_plan(text: str, source: str = "<plan>") -> ChangeControlPlan:
    """The plan a YAML document describes; PlanError naming each problem otherwise.

    ``source`` names the document in the error (usually its path).
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(source, [_yaml_problem(exc)]) from None
    if not isinstance(document, dict):
        found = "nothing" if document is None else f"a {type(document).__name__}"
        raise PlanError(source, [f"the top level must be a mapping of fields, found {found}"])
    try:
        return ChangeControlPlan.model_validate(document)
    except ValidationError as exc:
        raise PlanError(source, [_field_problem(error) for error in exc.errors()]) from None


def load_plan(path: Path) -> ChangeControlPlan:
    """The plan in the YAML file at ``path``; PlanError if it cannot be read or is not valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(str(path), [f"cannot be read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise PlanError(str(path), [f"is not UTF-8 text: {exc.reason}"]) from None
    return parse_plan(text, str(path))


class PlanFile:
    """A service's plan, read from its file when first needed and then kept for the process's
    life: a platform may start before its plan is written (the sequestered set the plan fixes
    by hash is taken from data the platform itself receives), yet a plan never changes under a
    running service. `load` raises PlanError while the file is missing or invalid."""

    def __init__(self, path: Path | None, plan: ChangeControlPlan | None = None) -> None:
        self.path = path
        self._plan = plan
        self._lock = threading.Lock()

    @classmethod
    def at(cls, path: Path) -> PlanFile:
        """The plan at ``path``: read now when its file is written (PlanError for a broken one,
        so that a service stops at its start), else when first needed."""
        plans = cls(path)
        if path.exists():
            plans.load()
        return plans

    @classmethod
    def fixed(cls, plan: ChangeControlPlan) -> PlanFile:
        """A plan already in hand (tests, and callers that read it themselves)."""
        return cls(None, plan)

    @property
    def written(self) -> bool:
        """Whether there is a plan to load (it may still be invalid)."""
        return self._plan is not None or (self.path is not None and self.path.exists())

    def load(self) -> ChangeControlPlan:
        with self._lock:
            if self._plan is None:
                assert self.path is not None  # one of the two is given
                self._plan = load_plan(self.path)
            return self._plan


def plan_digest(plan: ChangeControlPlan) -> str:
    """SHA-256 (hex) of the plan's canonical JSON: sorted keys, no whitespace, defaults filled.

    It names what the plan says, not how its file is written: comments, key order and spelling
    (``0.8`` or ``0.80``) do not change it; any value does.
    """
    canonical = json.dumps(
        plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _field_problem(error: Mapping[str, Any]) -> str:
    """``field.path: reason`` for one of pydantic's errors."""
    where = ".".join(str(part) for part in error["loc"]) or "(plan)"
    # A validator's ValueError arrives as "Value error, <its message>": the prefix adds nothing.
    reason = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {reason}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        # PyYAML counts lines and columns from 0; editors count from 1.
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return f"YAML syntax error: {exc}"
