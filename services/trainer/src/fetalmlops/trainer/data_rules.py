"""A change-control plan's data rules: the sequestered test set, and which labels may train.

From the plan's `data` section:

* The sequestered test set is a seeded, patient-level, class-stratified share of the catalog
  (`sequester`), frozen as a snapshot whose content hash the plan fixes. Every challenger and
  its champion are judged on it, so no image of it ever trains a model, nor any other image of
  a patient in it: a later visit of a sequestered patient shows the model the same fetus.
* A label trains only when at least ``min_agreeing_annotators`` annotators gave it and no other
  plane was given as often: annotators who split evenly have not agreed on a ground truth.
* A drift retrain leaves the drifted scanner segment out when the plan says so
  (``include_drifted_segment: false``).

`DataRules.reason` says why one image may not train (None when it may). A fresh snapshot drops
those images and records each with its reason (`snapshots.Exclusions`); a snapshot named by id
is refused when it holds any (`DataRules.violations`). Everything here is pure; `governance.py`
loads the plan and its sequestered set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from fetalmlops.datasets.readers import Split
from fetalmlops.trainer.snapshots import (
    EmptySnapshot,
    Entry,
    Exclusions,
    Filters,
    Manifest,
    SplitSpec,
    assign_by_patient,
    snapshot,
)

# An entry of the catalog and every annotator's reading of it (one each, their latest).
Catalogued = tuple[Entry, Sequence[str]]

SEQUESTERED_IMAGE = "sequestered image"
SEQUESTERED_PATIENT = "sequestered patient"
DRIFTED_SEGMENT = "drifted segment"
TIE = "annotators tie"


def sequester(
    name: str, entries: Iterable[Entry], share: float, seed: int, filters: Filters | None = None
) -> Manifest:
    """``share`` of the labelled ``entries`` (those ``filters`` admit), whole patients,
    class-stratified and seeded, as a snapshot whose every entry is in split "test".

    Its spec records the draw (a hold-out of ``share`` as test, the rest as train, with the
    seed); only the test part is in the manifest: the rest is what models may learn from.
    """
    if not 0 < share < 1:
        raise ValueError(f"the sequestered share must be between 0 and 1, not {share}")
    filters = filters or Filters()
    admitted = sorted((e for e in entries if filters.admits(e)), key=lambda e: e.image_id)
    if not admitted:
        raise EmptySnapshot(f"no labelled image matches {filters.to_dict()}")
    shares = {str(Split.TEST): share, str(Split.TRAIN): 1 - share}
    parts = assign_by_patient(admitted, shares, seed)
    chosen = tuple(e for e in admitted if parts[e.image_id] == Split.TEST)
    if not chosen:
        raise EmptySnapshot(f"a share of {share} of {len(admitted)} images holds no patient")
    spec = SplitSpec(fractions=shares, seed=seed)
    return Manifest(
        name, filters, spec, chosen, dict.fromkeys((e.image_id for e in chosen), "test")
    )


def agreeing(plane: str, readings: Sequence[str]) -> int:
    """How many annotators read the image as ``plane``; 0 when another plane was read as often,
    so that a tie never counts as agreement."""
    counts = Counter(readings)
    if any(other != plane and n >= counts[plane] for other, n in counts.items()):
        return 0
    return counts[plane]


@dataclass(frozen=True)
class DataRules:
    """What a plan's data section lets a training snapshot hold."""

    sequestered: Manifest  # the plan's sequestered test set, as its hash fixes it
    min_agreeing_annotators: int
    excluded_segment: str = ""  # the drifted segment, when the plan keeps it out of retraining

    # Every image of the catalog is asked about: the sets are built once.
    sequestered_images: frozenset[str] = field(init=False, repr=False, compare=False)
    sequestered_patients: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entries = self.sequestered.entries
        object.__setattr__(self, "sequestered_images", frozenset(e.image_id for e in entries))
        patients = frozenset(e.patient for e in entries if e.patient)
        object.__setattr__(self, "sequestered_patients", patients)

    def reason(self, entry: Entry, readings: Sequence[str]) -> str | None:
        """Why ``entry`` may not train a model (None when it may), the first rule it breaks."""
        if entry.image_id in self.sequestered_images:
            return SEQUESTERED_IMAGE
        if entry.patient and entry.patient in self.sequestered_patients:
            return SEQUESTERED_PATIENT
        if self.excluded_segment and entry.segment == self.excluded_segment:
            return DRIFTED_SEGMENT
        agreed = agreeing(entry.plane, readings)
        if agreed == 0 and readings and entry.plane in readings:
            return TIE
        if agreed < self.min_agreeing_annotators:
            return (
                f"{agreed} of {len(readings)} annotators agree "
                f"({self.min_agreeing_annotators} required)"
            )
        return None

    def exclusions(self, images: Mapping[str, str]) -> Exclusions:
        """The record of ``images`` (id → reason) left out by these rules."""
        return Exclusions(
            sequestered_snapshot_id=self.sequestered.id,
            sequestered_sha256=self.sequestered.sha256,
            min_agreeing_annotators=self.min_agreeing_annotators,
            excluded_segment=self.excluded_segment,
            images=dict(images),
        )

    def snapshot(
        self, name: str, catalogued: Iterable[Catalogued], filters: Filters, spec: SplitSpec
    ) -> Manifest:
        """`snapshots.snapshot` of what these rules let train among the images ``filters``
        admit, recording each image they left out and why."""
        admitted = [(e, readings) for e, readings in catalogued if filters.admits(e)]
        excluded = {
            e.image_id: why for e, readings in admitted if (why := self.reason(e, readings))
        }
        kept = [e for e, _ in admitted if e.image_id not in excluded]
        if admitted and not kept:
            raise EmptySnapshot(
                f"the change-control plan's data rules leave none of {len(admitted)} images: "
                f"{dict(Counter(excluded.values()))}"
            )
        return replace(snapshot(name, kept, filters, spec), exclusions=self.exclusions(excluded))

    def violations(
        self, manifest: Manifest, readings: Mapping[str, Sequence[str]]
    ) -> dict[str, str]:
        """The images of ``manifest`` these rules forbid to train (id → reason), by the
        catalog's ``readings`` now; an image the catalog no longer has has no reading."""
        return {
            e.image_id: why
            for e in manifest.entries
            if (why := self.reason(e, readings.get(e.image_id, ())))
        }
