"""What every reader returns, and the one error type that lists every bad row at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from fetalmlops.common.planes import BrainPlane, Plane

T = TypeVar("T")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
MAX_LISTED = 20


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


@dataclass(frozen=True)
class Sample:
    path: Path
    plane: Plane
    brain_plane: BrainPlane | None = None
    patient: str | None = None  # the dataset's own (pseudonymous) patient number
    split: Split | None = None
    cohort: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Problem:
    where: str  # "row 12" or a path
    reason: str


class DatasetError(ValueError):
    """A dataset that cannot be read as it is; ``problems`` lists every offending row."""

    def __init__(self, source: Path, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  {p.where}: {p.reason}" for p in self.problems[:MAX_LISTED])
        more = len(self.problems) - MAX_LISTED
        tail = f"\n  … and {more} more" if more > 0 else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{shown}{tail}")


@dataclass
class Collector:
    """Gathers samples and problems while rows are read, so one run reports every bad row."""

    source: Path
    problems: list[Problem] = field(default_factory=list)
    found: list[tuple[str, Sample]] = field(default_factory=list)

    def add(self, where: str, parse: Callable[[T], Sample], item: T) -> None:
        try:
            self.found.append((where, parse(item)))
        except KeyError as exc:
            self.problems.append(Problem(where, f"missing column {exc}"))
        except ValueError as exc:
            self.problems.append(Problem(where, str(exc)))

    def samples(self) -> list[Sample]:
        """The samples, or a ``DatasetError`` for missing files, duplicates and earlier problems."""
        rows_of: dict[Path, list[str]] = {}
        for where, sample in self.found:
            rows_of.setdefault(sample.path, []).append(where)
            if not sample.path.is_file():
                self.problems.append(Problem(where, f"file not found: {sample.path}"))
        for path, rows in rows_of.items():
            if len(rows) > 1:
                self.problems.append(Problem(", ".join(rows), f"duplicate image {path.name}"))
        if not self.found and not self.problems:
            self.problems.append(Problem(str(self.source), "no images"))
        if self.problems:
            raise DatasetError(self.source, self.problems)
        return [sample for _, sample in self.found]


def parse_split(value: str) -> Split | None:
    """Train/test flags come as words or as 1/0 (FETAL_PLANES_DB's "Train " column)."""
    folded = value.strip().lower()
    named = {"1": Split.TRAIN, "0": Split.TEST, "validation": Split.VAL, "valid": Split.VAL}
    if folded in named:
        return named[folded]
    if not folded:
        return None
    try:
        return Split(folded)
    except ValueError:
        raise ValueError(f"unknown split {value!r}") from None
