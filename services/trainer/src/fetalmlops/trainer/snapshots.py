"""Dataset snapshots: which labelled images a model learns from, split by patient, frozen.

A snapshot is a manifest: every image with its plane, patient pseudonym, cohort, device, where
its canonical picture is, and its split (or fold). Patients never straddle splits: all of a
patient's images land in one split, or a model would be scored on a fetus it has already seen.
Splits are stratified: patients are placed one by one (largest first, ties in a seeded order)
into the split whose share of that patient's classes is furthest below its target. The
manifest's content hash names it, so the same catalog, filters and seed give the same id.

Under a change-control plan a snapshot also records what the plan's data rules kept out of it
(`Exclusions`: each image left out, and why), so that anyone holding the manifest can check the
rules were kept; a snapshot made without a plan has no such record, and its content (so its id)
is what it always was.

Everything here is pure; `catalog.py` reads the catalog and `store` writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from fetalmlops.common.planes import Plane
from fetalmlops.datasets.readers import Split

SCHEMA = "fetalmlops.snapshot/v1"
UNKNOWN_SEGMENT = "unknown"  # the monitor's segment of a scanner that names neither make nor model
CLASSES = tuple(p.value for p in Plane)


@dataclass(frozen=True)
class Entry:
    """One labelled image. ``source`` is `bucket/key` of its canonical picture in the store,
    or a local path for datasets trained on outside the pipeline."""

    image_id: str
    plane: str
    source: str
    patient: str = ""  # a pseudonym; "" when unknown (the image is then its own group)
    cohort: str = ""
    device: str = ""
    brain_plane: str = ""
    created_at: str = ""  # ISO 8601, for date filters
    given_split: str = ""  # the dataset's own split, when it has one

    @property
    def group(self) -> str:
        return self.patient or f"image:{self.image_id}"

    @property
    def segment(self) -> str:
        """The scanner segment the image belongs to, named as the monitor names the segment a
        drift alarm is raised in (`fetalmlops.monitor.samples.segment`): the catalog's device is
        "manufacturer/model" from the same two DICOM attributes, and no device is "unknown"."""
        return self.device or UNKNOWN_SEGMENT


@dataclass(frozen=True)
class Filters:
    cohorts: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # Held out for out-of-domain evaluation: never trained or validated on.
    exclude_cohorts: tuple[str, ...] = ()

    def admits(self, entry: Entry) -> bool:
        if self.cohorts and entry.cohort not in self.cohorts:
            return False
        if entry.cohort in self.exclude_cohorts:
            return False
        if self.devices and entry.device not in self.devices:
            return False
        if (self.since or self.until) and entry.created_at:
            at = datetime.fromisoformat(entry.created_at)
            if (self.since and at < self.since) or (self.until and at >= self.until):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "cohorts": list(self.cohorts),
            "devices": list(self.devices),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "exclude_cohorts": list(self.exclude_cohorts),
        }


@dataclass(frozen=True)
class SplitSpec:
    """Hold-out fractions, or k folds (each fold once the validation set), or the dataset's
    own split ("given")."""

    method: str = "holdout"  # holdout | kfold | given
    fractions: Mapping[str, float] = field(
        default_factory=lambda: {Split.TRAIN: 0.7, Split.VAL: 0.15, Split.TEST: 0.15}
    )
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("holdout", "kfold", "given"):
            raise ValueError(f"unknown split method {self.method!r}: holdout, kfold or given")
        unknown = set(self.fractions) - set(Split)
        if self.method == "holdout" and (unknown or abs(sum(self.fractions.values()) - 1) > 1e-6):
            raise ValueError("hold-out fractions are train/val/test shares summing to 1")
        if self.method == "kfold" and self.folds < 2:
            raise ValueError("k-fold needs at least 2 folds")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "fractions": {str(k): v for k, v in self.fractions.items()},
            "folds": self.folds,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Exclusions:
    """What a change-control plan's data rules kept out of a snapshot, and by which rules."""

    sequestered_snapshot_id: str  # the plan's sequestered test set…
    sequestered_sha256: str  # …as its content hash fixes it
    min_agreeing_annotators: int
    excluded_segment: str  # a drifted scanner segment the plan keeps out of training; "" none
    images: Mapping[str, str]  # image id -> why it was left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequestered_snapshot_id": self.sequestered_snapshot_id,
            "sequestered_sha256": self.sequestered_sha256,
            "min_agreeing_annotators": self.min_agreeing_annotators,
            "excluded_segment": self.excluded_segment,
            "images": dict(sorted(self.images.items())),
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Exclusions:
        return cls(
            sequestered_snapshot_id=document["sequestered_snapshot_id"],
            sequestered_sha256=document["sequestered_sha256"],
            min_agreeing_annotators=document["min_agreeing_annotators"],
            excluded_segment=document["excluded_segment"],
            images=dict(document["images"]),
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    filters: Filters
    spec: SplitSpec
    entries: tuple[Entry, ...]
    assignment: Mapping[str, str]  # image id -> split name, or fold number as text
    exclusions: Exclusions | None = None  # taken under a change-control plan: what it kept out

    def split(self, name: str) -> list[Entry]:
        return [e for e in self.entries if self.assignment[e.image_id] == name]

    def fold(self, k: int) -> tuple[list[Entry], list[Entry]]:
        """Training and validation entries of fold ``k`` (k-fold snapshots)."""
        val = [e for e in self.entries if self.assignment[e.image_id] == str(k)]
        return [e for e in self.entries if self.assignment[e.image_id] != str(k)], val

    def counts(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {}
        for entry in self.entries:
            table.setdefault(self.assignment[entry.image_id], Counter())[entry.plane] += 1
        return {part: dict(sorted(c.items())) for part, c in sorted(table.items())}

    def document(self) -> dict[str, Any]:
        """The manifest as stored: JSON, sorted, without anything that varies between runs."""
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "classes": list(CLASSES),
            "filters": self.filters.to_dict(),
            "split": self.spec.to_dict(),
            "counts": self.counts(),
            "entries": [
                {**asdict(e), "split": self.assignment[e.image_id]}
                for e in sorted(self.entries, key=lambda e: e.image_id)
            ],
        }
        if self.exclusions is not None:  # absent without a plan: older ids stay what they were
            document["exclusions"] = self.exclusions.to_dict()
        return document

    def content(self) -> bytes:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content()).hexdigest()

    @property
    def id(self) -> str:
        return f"ds-{self.sha256[:16]}"

    @classmethod
    def parse(cls, content: bytes) -> Manifest:
        document = json.loads(content)
        if document.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} manifest")
        filters = document["filters"]
        split = document["split"]
        entries = tuple(
            Entry(**{k: v for k, v in e.items() if k != "split"}) for e in document["entries"]
        )
        return cls(
            name=document["name"],
            filters=Filters(
                cohorts=tuple(filters["cohorts"]),
                devices=tuple(filters["devices"]),
                since=datetime.fromisoformat(filters["since"]) if filters["since"] else None,
                until=datetime.fromisoformat(filters["until"]) if filters["until"] else None,
                exclude_cohorts=tuple(filters["exclude_cohorts"]),
            ),
            spec=SplitSpec(split["method"], split["fractions"], split["folds"], split["seed"]),
            entries=entries,
            assignment={e["image_id"]: e["split"] for e in document["entries"]},
            exclusions=(
                Exclusions.from_dict(document["exclusions"]) if "exclusions" in document else None
            ),
        )


class EmptySnapshot(ValueError):
    """No labelled image passes the filters."""


def snapshot(name: str, entries: Iterable[Entry], filters: Filters, spec: SplitSpec) -> Manifest:
    chosen = tuple(sorted((e for e in entries if filters.admits(e)), key=lambda e: e.image_id))
    if not chosen:
        raise EmptySnapshot(f"no labelled image matches {filters.to_dict()}")
    if spec.method == "given":
        missing = [e.image_id for e in chosen if e.given_split not in set(Split)]
        if missing:
            raise ValueError(f"{len(missing)} images have no split of their own, e.g. {missing[0]}")
        assignment = {e.image_id: e.given_split for e in chosen}
    elif spec.method == "kfold":
        shares = {str(k): 1 / spec.folds for k in range(spec.folds)}
        assignment = assign_by_patient(chosen, shares, spec.seed)
    else:
        shares = {str(k): v for k, v in spec.fractions.items()}
        assignment = assign_by_patient(chosen, shares, spec.seed)
    return Manifest(name, filters, spec, chosen, assignment)


def assign_by_patient(
    entries: Sequence[Entry], shares: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Image id → part: whole patients, stratified by class, deterministic for a seed."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: size first, the seeded order within
    totals = Counter(e.plane for e in entries)
    have: dict[str, Counter[str]] = {part: Counter() for part in shares}
    placed: dict[str, int] = dict.fromkeys(shares, 0)
    assignment: dict[str, str] = {}
    for group in order:
        classes = Counter(e.plane for e in groups[group])

        def need(part: str, classes: Counter[str] = classes) -> tuple[float, float]:
            by_class = sum(
                n * (shares[part] * totals[c] - have[part][c]) / totals[c]
                for c, n in classes.items()
            )
            return by_class, shares[part] * len(entries) - placed[part]

        part = max(shares, key=need)
        have[part].update(classes)
        placed[part] += len(groups[group])
        assignment.update({e.image_id: part for e in groups[group]})
    return assignment


def majority_plane(planes: Sequence[str]) -> str:
    """Several annotators: the most frequent reading; a tie goes to the canonical order."""
    counts = Counter(planes)
    return min(counts, key=lambda p: (-counts[p], CLASSES.index(p) if p in CLASSES else 99))
