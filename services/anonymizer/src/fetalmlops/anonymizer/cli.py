"""`fetalmlops anonymize IN OUT`: the service's policy, offline, for a file or a folder of
DICOM, PNG and JPEG.

Outputs are named by instance (a DICOM by its pseudonymous SOP Instance UID, a picture by the
pseudonym of its content), so two inputs of one instance would land on one name: the first is
written, every later one is said to duplicate it and is not written. An output already in OUT
is never replaced by a different one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from fetalmlops.anonymizer.catalog import image_id
from fetalmlops.anonymizer.pipeline import anonymize_dicom, anonymize_picture
from fetalmlops.anonymizer.profile.policy import Policy
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.anonymizer.verify import Residue
from fetalmlops.imaging.regions import NoRegions

DICOM_PREAMBLE = 128  # PS3.10 7.1: "DICM" follows a 128-byte preamble


def anonymize_file(data: bytes, policy: Policy, deidentified_at_source: bool) -> tuple[str, bytes]:
    """The output's name and bytes: a DICOM named by its new SOP Instance UID, a picture by
    the pseudonym of its content."""
    if data[DICOM_PREAMBLE : DICOM_PREAMBLE + 4] == b"DICM":
        result = anonymize_dicom(data, policy)
        return f"{result.sop_instance_uid}.dcm", result.data
    picture = anonymize_picture(data, policy, deidentified_at_source)
    sha256 = hashlib.sha256(data).hexdigest()
    return f"{image_id(policy.secret, sha256)}.png", picture.png


@dataclass
class Outcome:
    """What a run did with each input, for the summary: written, a copy of an earlier input
    (same instance, same output), in conflict with one (same instance, other output), refused."""

    written: dict[str, Path] = field(default_factory=dict)  # output name → the input written
    duplicates: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def place(self, path: Path, name: str, data: bytes, out: Path) -> None:
        """Write ``data`` as ``out/name`` unless an earlier input or an earlier run did."""
        target, first = out / name, self.written.get(name)
        if first is not None:
            same = target.read_bytes() == data
            other = "" if same else ", with other content"
            (self.duplicates if same else self.conflicts).append(
                f"{path} is the same instance as {first}{other}: not written"
            )
        elif target.exists() and target.read_bytes() != data:
            self.conflicts.append(
                f"{path}: {target} already holds another image of this instance: not replaced"
            )
        else:
            target.write_bytes(data)
            self.written[name] = path


def anonymize(
    source: Annotated[
        Path, typer.Argument(help="A DICOM, PNG or JPEG file, or a folder of them.", exists=True)
    ],
    out: Annotated[Path, typer.Argument(help="Output folder (created).")],
) -> None:
    """PS3.15 basic profile + modified dates + clean pixel data, with the service's settings.

    The secret comes from FETALMLOPS_ANONYMIZER_SECRET, so runs with the same secret give the
    same pseudonyms as the service; masks, OCR and the other options from the same variables.
    A file the verification gate refuses is not written; nor is a second file of an instance
    already written (said as a duplicate, or as a conflict when its content differs).
    """
    try:
        own = AnonymizerSettings()
        policy = own.policy()
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    out.mkdir(parents=True, exist_ok=True)
    outcome = Outcome()
    with Progress() as progress:
        task = progress.add_task("anonymizing", total=len(files))
        for path in files:
            try:
                name, data = anonymize_file(path.read_bytes(), policy, own.pictures_deidentified)
                outcome.place(path, name, data, out)
            except (NoRegions, Residue) as exc:
                outcome.refused.append(f"{path}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # not an image, or not decodable: said, not fatal
                outcome.refused.append(
                    f"{path}: not a readable DICOM, PNG or JPEG ({type(exc).__name__})"
                )
            progress.advance(task)
    typer.echo(
        f"{len(outcome.written)} anonymized into {out}, {len(outcome.duplicates)} duplicates,"
        f" {len(outcome.conflicts)} conflicts, {len(outcome.refused)} refused"
    )
    for kind, lines in (("duplicate", outcome.duplicates), ("conflict", outcome.conflicts),
                        ("refused", outcome.refused)):  # fmt: skip
        for line in lines:
            typer.echo(f"  {kind} {line}", err=True)
    if outcome.refused or outcome.conflicts:
        raise typer.Exit(1)


# The same command standalone, for `python -m`-style use and tests.
app = typer.Typer(help="De-identify images offline with the anonymizer's policy.")
app.command()(anonymize)
