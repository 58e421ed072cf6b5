"""The change-control plan: the project's example validates, and every bad plan names its fault."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from typer.testing import CliRunner

from fetalmlops.changecontrol.cli import plan_app
from fetalmlops.changecontrol.plan import PlanError, load_plan, parse_plan, plan_digest
from fetalmlops.common.planes import Plane

EXAMPLE = Path(__file__).parents[3] / "deploy" / "change-control" / "plan.yaml"


def variant(edit: Callable[[dict[str, Any]], None]) -> str:
    """The example plan's YAML with ``edit`` applied to its parsed document."""
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    edit(document)
    return yaml.safe_dump(document)


def problems_of(text: str) -> str:
    with pytest.raises(PlanError) as raised:
        parse_plan(text, "plan.yaml")
    return str(raised.value)


def test_the_example_plan_loads_and_validates() -> None:
    plan = load_plan(EXAMPLE)

    assert plan.model == "fetal-planes"
    assert plan.plan_version == "2026.1"
    assert plan.allowed_changes == ["retrain", "recalibrate"]
    assert set(plan.acceptance.recall_floors) == set(Plane)
    assert plan.acceptance.macro_f1_non_inferiority_margin == 0.02
    assert plan.rollout.shadow and plan.rollout.canary_fraction == 0.1
    assert plan.approval.required and plan.approval.approvers == ["clinical-lead", "ml-lead"]


def test_a_missing_plane_floor_is_named() -> None:
    text = variant(lambda plan: plan["acceptance"]["recall_floors"].pop("fetal_femur"))

    assert "acceptance.recall_floors: missing planes: fetal_femur" in problems_of(text)


def test_an_unknown_plane_is_named() -> None:
    text = variant(lambda plan: plan["acceptance"]["recall_floors"].update(fetal_heart=0.8))

    assert "acceptance.recall_floors: unknown planes: fetal_heart" in problems_of(text)


def test_a_recall_floor_outside_zero_to_one_is_refused_at_its_plane() -> None:
    text = variant(lambda plan: plan["acceptance"]["recall_floors"].update(fetal_brain=1.2))

    assert "acceptance.recall_floors.fetal_brain: Input should be less than or equal to 1" in (
        problems_of(text)
    )


def test_required_approval_with_no_approvers_is_refused() -> None:
    text = variant(lambda plan: plan["approval"].update(approvers=[]))

    assert "approval: approval is required but no approvers are named" in problems_of(text)


def test_approval_not_required_may_name_no_approvers() -> None:
    text = variant(lambda plan: plan["approval"].update(required=False, approvers=[]))

    assert parse_plan(text).approval.approvers == []


def test_an_approver_named_twice_is_refused() -> None:
    text = variant(lambda plan: plan["approval"].update(approvers=["ml-lead", "ml-lead"]))

    assert "approval.approvers: approvers named more than once: ml-lead" in problems_of(text)


def test_every_problem_is_listed_with_its_field_path() -> None:
    def edit(plan: dict[str, Any]) -> None:
        plan["acceptance"]["confidence"] = 1.5
        plan["rollout"]["canary_fration"] = 0.2
        plan["allowed_changes"].append("new_architecture")
        del plan["data"]["sequestered_test"]["sha256"]

    problems = problems_of(variant(edit))

    assert problems.startswith("plan.yaml is not a valid change-control plan:")
    assert "acceptance.confidence: Input should be less than 1" in problems
    assert "rollout.canary_fration: Extra inputs are not permitted" in problems
    assert "allowed_changes.2: Input should be 'retrain' or 'recalibrate'" in problems
    assert "data.sequestered_test.sha256: Field required" in problems
    assert "Traceback" not in problems


def test_a_sequestered_test_hash_that_is_not_sha256_hex_is_refused() -> None:
    text = variant(lambda plan: plan["data"]["sequestered_test"].update(sha256="abc123"))

    assert "data.sequestered_test.sha256: String should match pattern" in problems_of(text)


def test_a_yaml_syntax_error_names_its_line() -> None:
    problems = problems_of("model: fetal-planes\nallowed_changes: [retrain\n")

    assert "YAML syntax error at line 3" in problems


def test_a_list_at_the_top_level_is_refused() -> None:
    problems = problems_of("- retrain\n- recalibrate\n")

    assert "the top level must be a mapping of fields, found a list" in problems


def test_an_empty_file_is_refused() -> None:
    assert "the top level must be a mapping of fields, found nothing" in problems_of("")


def test_an_unreadable_file_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot be read"):
        load_plan(tmp_path / "absent.yaml")


def test_a_loaded_plan_cannot_be_changed() -> None:
    plan = load_plan(EXAMPLE)

    with pytest.raises(pydantic.ValidationError):
        plan.acceptance.ece_ceiling = 0.5  # type: ignore[misc]


def test_the_digest_is_stable_and_ignores_comments_and_key_order() -> None:
    plan = load_plan(EXAMPLE)
    rewritten = parse_plan(variant(lambda _: None))  # no comments, keys sorted

    assert plan_digest(plan) == plan_digest(load_plan(EXAMPLE))
    assert plan_digest(rewritten) == plan_digest(plan)
    assert len(plan_digest(plan)) == 64 and int(plan_digest(plan), 16) >= 0


def test_the_digest_changes_when_any_value_changes() -> None:
    digest = plan_digest(load_plan(EXAMPLE))
    edits: list[Callable[[dict[str, Any]], None]] = [
        lambda plan: plan["acceptance"].update(macro_f1_non_inferiority_margin=0.03),
        lambda plan: plan["acceptance"]["recall_floors"].update(other=0.81),
        lambda plan: plan["approval"]["approvers"].append("qa-lead"),
        lambda plan: plan["data"].update(include_drifted_segment=False),
    ]

    for edit in edits:
        assert plan_digest(parse_plan(variant(edit))) != digest


def test_validate_summarises_the_example_plan() -> None:
    result = CliRunner().invoke(plan_app, ["validate", str(EXAMPLE)])

    assert result.exit_code == 0, result.output
    assert "fetal-planes" in result.stdout
    assert "2026.1" in result.stdout
    assert f"sha256:{plan_digest(load_plan(EXAMPLE))}" in result.stdout
    assert "retrain, recalibrate" in result.stdout
    assert "shadow for 200 predictions, then canary 10%" in result.stdout
    assert "required by clinical-lead, ml-lead" in result.stdout


def test_validate_exits_2_and_names_the_problems_of_a_bad_plan(tmp_path: Path) -> None:
    bad = tmp_path / "plan.yaml"
    bad.write_text(variant(lambda plan: plan["approval"].update(approvers=[])), encoding="utf-8")

    result = CliRunner().invoke(plan_app, ["validate", str(bad)])

    assert result.exit_code == 2
    assert "approval: approval is required but no approvers are named" in result.stderr
    assert result.stdout == ""
