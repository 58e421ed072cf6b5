"""Champion against challenger: the images they are scored on, and the evidence kept."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from fetalmlops.changecontrol.acceptance import Check, Verdict
from fetalmlops.changecontrol.plan import ChangeControlPlan, load_plan, plan_digest
from fetalmlops.common.db import ModelStage
from fetalmlops.trainer.challenge import evaluation_set, evidence, summary, verdict_message
from fetalmlops.trainer.data_rules import sequester
from fetalmlops.trainer.governance import Governance
from fetalmlops.trainer.registry import stage_after_gate
from fetalmlops.trainer.snapshots import CLASSES, Entry, Filters, SplitSpec, snapshot

DRIFTED = "Meridian Imaging/Meridian V7"
PLAN = Path(__file__).parents[3] / "deploy" / "change-control" / "plan.yaml"


def catalog(patients: int = 80) -> list[Entry]:
    rng = random.Random(0)
    return [
        Entry(
            image_id=f"img-{p:03d}-{i}",
            plane=rng.choice(CLASSES),
            source=f"fetal-anonymized/canonical/img-{p:03d}-{i}.png",
            patient=f"FM{p:04d}",
            device=("Sonora Systems/Sonora X9", DRIFTED)[p % 2],
        )
        for p in range(patients)
        for i in range(rng.randint(1, 6))
    ]


def test_the_evaluation_set_is_the_sequestered_set_and_the_drifted_segment_s_test_patients() -> (
    None
):
    entries = catalog()
    held = sequester("sequestered", entries, 0.2, seed=1)
    training = snapshot(
        "planes", [e for e in entries if e.image_id not in held.assignment], Filters(), SplitSpec()
    )

    plain = evaluation_set(held, training)
    drifted = evaluation_set(held, training, DRIFTED)

    assert [e.image_id for e in plain] == sorted(held.assignment)
    added = {e.image_id for e in drifted} - set(held.assignment)
    expected = {e.image_id for e in training.split("test") if e.segment == DRIFTED}
    assert added == expected and expected  # test patients of that scanner, nothing else
    assert [e.image_id for e in drifted] == sorted(e.image_id for e in drifted)
    # A k-fold snapshot has no test patients: the sequestered set alone.
    folds = snapshot(
        "folds",
        [e for e in entries if e.image_id not in held.assignment],
        Filters(),
        SplitSpec(method="kfold", folds=3),
    )
    assert evaluation_set(held, folds, DRIFTED) == plain


def governance(plan: ChangeControlPlan) -> Governance:
    held = sequester("sequestered", catalog(), 0.2, seed=1)
    return Governance(plan, plan_digest(plan), held)


def test_the_evidence_names_the_plan_the_set_the_champion_and_what_was_scored() -> None:
    plan = load_plan(PLAN)
    ruled = governance(plan)
    images = [
        Entry("a", CLASSES[0], "x", device=DRIFTED),
        Entry("b", CLASSES[1], "y", device=DRIFTED),
        Entry("c", CLASSES[2], "z"),
    ]
    verdict = Verdict(
        False,
        (
            Check("macro_f1_non_inferiority", -0.01, -0.02, True),
            Check("recall[other]", math.nan, 0.8, False),
        ),
    )

    document = evidence(verdict, ruled, 4, images, DRIFTED, 7, {"challenger": 3.5, "champion": 3})

    assert json.loads(json.dumps(document, allow_nan=False)) == document  # storable as it is
    assert document["plan_version"] == "2026.1" and document["plan_digest"] == plan_digest(plan)
    assert document["sequestered_snapshot_id"] == ruled.sequestered.id
    assert document["sequestered_sha256"] == ruled.sequestered.sha256
    assert document["champion_version"] == 4 and document["seed"] == 7
    assert document["images"] == 3
    assert document["images_per_segment"] == {DRIFTED: 2, "unknown": 1}

    message = verdict_message(document)
    assert not message.passed and message.images == 3 and message.champion_version == 4
    assert message.plan_digest == plan_digest(plan)
    assert message.sequestered_snapshot_id == ruled.sequestered.id
    non_inferiority, recall = message.checks
    assert non_inferiority.HasField("value") and non_inferiority.value == -0.01
    assert not recall.HasField("value") and not recall.passed  # not measurable: unset
    assert summary(document) == (
        "gate failed under plan 2026.1 on 3 images, against v4; failed: recall[other]"
    )


def test_a_verdict_makes_a_challenger_or_a_rejected_version() -> None:
    assert stage_after_gate(True) is ModelStage.CHALLENGER
    assert stage_after_gate(False) is ModelStage.REJECTED
