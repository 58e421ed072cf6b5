"""Snapshots: patient-level, stratified, deterministic splits and a content-named manifest."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetalmlops.trainer.snapshots import (
    CLASSES,
    EmptySnapshot,
    Entry,
    Filters,
    Manifest,
    SplitSpec,
    majority_plane,
    snapshot,
)


def catalog(patients: int = 60, seed: int = 0) -> list[Entry]:
    rng = random.Random(seed)
    entries = []
    for p in range(patients):
        for i in range(rng.randint(1, 6)):
            entries.append(
                Entry(
                    image_id=f"img-{p:03d}-{i}",
                    plane=rng.choice(CLASSES),
                    source=f"fetal-anonymized/canonical/img-{p:03d}-{i}.png",
                    patient=f"FM{p:04d}",
                    cohort="highend-a" if p % 3 else "portable",
                    device="Sonora/X9",
                )
            )
    return entries


def test_no_patient_straddles_two_splits() -> None:
    manifest = snapshot("planes", catalog(), Filters(), SplitSpec(seed=1))
    where: dict[str, set[str]] = {}
    for entry in manifest.entries:
        where.setdefault(entry.patient, set()).add(manifest.assignment[entry.image_id])
    assert all(len(parts) == 1 for parts in where.values())


def test_splits_follow_their_shares_and_every_class_is_in_every_split() -> None:
    entries = catalog(patients=200)
    manifest = snapshot("planes", entries, Filters(), SplitSpec(seed=2))
    sizes = {part: len(manifest.split(part)) for part in ("train", "val", "test")}
    assert abs(sizes["train"] / len(entries) - 0.70) < 0.05
    assert abs(sizes["val"] / len(entries) - 0.15) < 0.04
    for part in ("train", "val", "test"):
        classes = Counter(e.plane for e in manifest.split(part))
        assert set(classes) == set(CLASSES), part
        overall = Counter(e.plane for e in entries)
        for plane in CLASSES:  # stratified: each class's share close to its overall share
            assert abs(classes[plane] / sizes[part] - overall[plane] / len(entries)) < 0.06


def test_same_catalog_filters_and_seed_give_the_same_snapshot() -> None:
    entries = catalog()
    first = snapshot("planes", entries, Filters(), SplitSpec(seed=3))
    again = snapshot("planes", list(reversed(entries)), Filters(), SplitSpec(seed=3))
    other = snapshot("planes", entries, Filters(), SplitSpec(seed=4))
    assert first.id == again.id and first.content() == again.content()
    assert other.id != first.id
    assert Manifest.parse(first.content()) == first


def test_filters_select_cohorts() -> None:
    manifest = snapshot("portable", catalog(), Filters(cohorts=("portable",)), SplitSpec())
    assert {e.cohort for e in manifest.entries} == {"portable"}
    assert manifest.document()["filters"]["cohorts"] == ["portable"]
    with pytest.raises(EmptySnapshot):
        snapshot("none", catalog(), Filters(devices=("Acme/Nothing",)), SplitSpec())


def test_k_folds_partition_the_patients() -> None:
    manifest = snapshot("planes", catalog(), Filters(), SplitSpec(method="kfold", folds=4))
    folds = [manifest.fold(k) for k in range(4)]
    vals = [{e.image_id for e in val} for _, val in folds]
    assert set().union(*vals) == {e.image_id for e in manifest.entries}
    assert sum(len(v) for v in vals) == len(manifest.entries)
    for train, val in folds:
        assert not {e.patient for e in train} & {e.patient for e in val}


def test_a_dataset_s_own_split_is_kept_when_asked() -> None:
    entries = [
        Entry(f"i{n}", "other", f"/d/{n}.png", given_split="train" if n < 8 else "test")
        for n in range(10)
    ]
    manifest = snapshot("given", entries, Filters(), SplitSpec(method="given"))
    assert len(manifest.split("train")) == 8 and len(manifest.split("test")) == 2
    with pytest.raises(ValueError, match="no split of their own"):
        snapshot("given", [Entry("x", "other", "/x.png")], Filters(), SplitSpec(method="given"))


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="summing to 1"):
        SplitSpec(fractions={"train": 0.9, "val": 0.2})
    with pytest.raises(ValueError, match="unknown split method"):
        SplitSpec(method="random")


def test_majority_of_annotators_with_a_stable_tie_break() -> None:
    assert majority_plane(["fetal_brain", "fetal_femur", "fetal_brain"]) == "fetal_brain"
    assert majority_plane(["fetal_femur", "fetal_abdomen"]) == "fetal_abdomen"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(CLASSES)), min_size=1, max_size=80))
def test_any_catalog_splits_whole_patients(rows: list[tuple[int, str]]) -> None:
    entries = [
        Entry(f"img-{n}", plane, f"/p/{n}.png", patient=f"P{patient}")
        for n, (patient, plane) in enumerate(rows)
    ]
    manifest = snapshot("any", entries, Filters(), SplitSpec())
    assert set(manifest.assignment) == {e.image_id for e in entries}
    by_patient: dict[str, set[str]] = {}
    for e in entries:
        by_patient.setdefault(e.patient, set()).add(manifest.assignment[e.image_id])
    assert all(len(v) == 1 for v in by_patient.values())
