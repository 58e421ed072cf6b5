"""A change-control plan's data rules: the sequestered test set, and what may train."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from fetalmlops.trainer.data_rules import (
    DRIFTED_SEGMENT,
    SEQUESTERED_IMAGE,
    SEQUESTERED_PATIENT,
    TIE,
    Catalogued,
    DataRules,
    agreeing,
    sequester,
)
from fetalmlops.trainer.snapshots import (
    CLASSES,
    EmptySnapshot,
    Entry,
    Filters,
    Manifest,
    SplitSpec,
    snapshot,
)

SCANNERS = ("Sonora Systems/Sonora X9", "Meridian Imaging/Meridian V7", "")


def catalog(patients: int = 80, seed: int = 0) -> list[Entry]:
    rng = random.Random(seed)
    return [
        Entry(
            image_id=f"img-{p:03d}-{i}",
            plane=rng.choice(CLASSES),
            source=f"fetal-anonymized/canonical/img-{p:03d}-{i}.png",
            patient=f"FM{p:04d}",
            cohort="highend-a",
            device=SCANNERS[p % 3],
        )
        for p in range(patients)
        for i in range(rng.randint(1, 6))
    ]


def agreed(entries: list[Entry], annotators: int = 2) -> list[Catalogued]:
    return [(e, (e.plane,) * annotators) for e in entries]


def test_the_sequestered_set_is_a_seeded_stratified_share_of_whole_patients() -> None:
    entries = catalog(patients=200)
    held = sequester("sequestered", entries, 0.2, seed=3)

    assert set(held.assignment.values()) == {"test"} and held.split("test") == list(held.entries)
    assert abs(len(held.entries) / len(entries) - 0.2) < 0.03
    chosen = {e.patient for e in held.entries}
    assert all(e.image_id in held.assignment for e in entries if e.patient in chosen)
    overall, kept = Counter(e.plane for e in entries), Counter(e.plane for e in held.entries)
    for plane in CLASSES:  # stratified: each plane's share close to the catalog's
        assert abs(kept[plane] / len(held.entries) - overall[plane] / len(entries)) < 0.05
    again = sequester("sequestered", list(reversed(entries)), 0.2, seed=3)
    assert again.id == held.id and Manifest.parse(held.content()) == held
    assert sequester("sequestered", entries, 0.2, seed=4).id != held.id
    assert held.document()["split"]["fractions"] == {"test": 0.2, "train": 0.8}


def test_a_share_that_is_not_a_share_and_an_empty_draw_are_refused() -> None:
    for share in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            sequester("sequestered", catalog(), share, seed=0)
    with pytest.raises(EmptySnapshot):
        sequester("sequestered", catalog(), 0.2, seed=0, filters=Filters(cohorts=("none",)))


def test_agreement_counts_the_majority_and_a_tie_is_no_agreement() -> None:
    assert agreeing("fetal_brain", ["fetal_brain", "fetal_brain", "fetal_femur"]) == 2
    assert agreeing("fetal_brain", ["fetal_brain"]) == 1
    assert agreeing("fetal_brain", ["fetal_brain", "fetal_femur"]) == 0
    assert agreeing("fetal_brain", ["fetal_femur", "fetal_femur", "fetal_brain"]) == 0
    assert agreeing("fetal_brain", []) == 0


def test_a_governed_snapshot_leaves_out_the_sequestered_set_its_patients_and_weak_labels() -> None:
    entries = catalog()
    held = sequester("sequestered", entries, 0.2, seed=1)
    patients = {e.patient for e in held.entries}
    # A sequestered patient's later visit, catalogued after the set was frozen.
    later = Entry("img-later", "fetal_femur", "fetal-anonymized/later.png", patient=min(patients))
    free = [e for e in entries if e.patient not in patients]
    single, tied, rest = free[0], free[1], free[2:]
    catalogued = [
        *agreed([*held.entries, later, *rest]),
        (single, (single.plane,)),
        (tied, (tied.plane, next(c for c in CLASSES if c != tied.plane))),
    ]

    rules = DataRules(held, min_agreeing_annotators=2)
    manifest = rules.snapshot("planes", catalogued, Filters(), SplitSpec(seed=0))

    assert {e.image_id for e in manifest.entries} == {e.image_id for e in rest}
    assert manifest.exclusions is not None
    excluded = manifest.exclusions.images
    assert {i for i, why in excluded.items() if why == SEQUESTERED_IMAGE} == set(held.assignment)
    assert excluded["img-later"] == SEQUESTERED_PATIENT
    assert excluded[single.image_id] == "1 of 1 annotators agree (2 required)"
    assert excluded[tied.image_id] == TIE
    record = manifest.document()["exclusions"]
    assert (record["sequestered_snapshot_id"], record["sequestered_sha256"]) == (
        held.id,
        held.sha256,
    )
    assert record["min_agreeing_annotators"] == 2
    assert Manifest.parse(manifest.content()) == manifest  # anyone can read the record back


def test_a_drift_retrain_leaves_the_drifted_segment_out_only_when_the_plan_says_so() -> None:
    entries = catalog()
    held = sequester("sequestered", entries, 0.2, seed=1)
    free = agreed([e for e in entries if e.image_id not in held.assignment], annotators=1)
    drifted = "Meridian Imaging/Meridian V7"

    kept_out = DataRules(held, 1, excluded_segment=drifted).snapshot(
        "planes", free, Filters(), SplitSpec()
    )
    kept_in = DataRules(held, 1).snapshot("planes", free, Filters(), SplitSpec())

    assert drifted not in {e.segment for e in kept_out.entries}
    assert (
        kept_out.exclusions is not None and DRIFTED_SEGMENT in kept_out.exclusions.images.values()
    )
    assert drifted in {e.segment for e in kept_in.entries}


def test_rules_that_leave_nothing_say_so() -> None:
    entries = catalog(patients=10)
    held = sequester("sequestered", entries, 0.2, seed=1)
    with pytest.raises(EmptySnapshot, match="data rules leave none"):
        DataRules(held, 3).snapshot("planes", agreed(entries), Filters(), SplitSpec())


def test_a_named_snapshot_is_checked_by_the_same_rules() -> None:
    entries = catalog()
    held = sequester("sequestered", entries, 0.2, seed=1)
    readings = {e.image_id: (e.plane, e.plane) for e in entries}
    rules = DataRules(held, 2)

    everything = snapshot("planes", entries, Filters(), SplitSpec())
    broken = rules.violations(everything, readings)
    assert set(broken) == set(held.assignment) and set(broken.values()) == {SEQUESTERED_IMAGE}

    clean = [e for e in entries if e.image_id not in held.assignment]
    assert rules.violations(snapshot("planes", clean, Filters(), SplitSpec()), readings) == {}
    # An image the catalog no longer has has no reading: nobody agrees on it any more.
    gone = {k: v for k, v in readings.items() if k != clean[0].image_id}
    assert rules.violations(snapshot("planes", clean, Filters(), SplitSpec()), gone) == {
        clean[0].image_id: "0 of 0 annotators agree (2 required)"
    }


def test_a_snapshot_taken_without_a_plan_keeps_the_id_it_always_had() -> None:
    # The id this catalog, filter and seed got before manifests could record exclusions.
    entries = [
        Entry(
            f"img-{i}",
            CLASSES[i % 6],
            f"fetal-anonymized/canonical/img-{i}.png",
            patient=f"P{i // 3}",
            cohort="highend-a",
            device="Sonora Systems/Sonora X9",
            created_at=f"2026-01-0{1 + i % 9}T00:00:00+00:00",
        )
        for i in range(24)
    ]
    filters = Filters(cohorts=("highend-a",), since=datetime(2025, 1, 1, tzinfo=UTC))

    manifest = snapshot("planes", entries, filters, SplitSpec(seed=5))

    assert manifest.exclusions is None and "exclusions" not in manifest.document()
    assert manifest.sha256 == "15a4babbf21550e76c64dfa0bf3672459a2e56e19e7cac021792adfbaf9e93a2"


def test_an_image_s_segment_is_named_as_the_monitor_names_a_drifting_segment() -> None:
    # The monitor's segment is "manufacturer/model" of the request's DICOM header, "unknown"
    # when it names neither; the catalog's device joins the same two attributes the same way.
    assert Entry("a", "other", "x", device="Sonora Systems/Sonora X9").segment == (
        "Sonora Systems/Sonora X9"
    )
    assert Entry("a", "other", "x").segment == "unknown"
