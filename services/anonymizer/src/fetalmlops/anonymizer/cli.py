"""`fetalmlops anonymize IN OUT`: the service's policy, offline, for a file or a folder of DICOM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from fetalmlops.anonymizer.pipeline import anonymize_dicom
from fetalmlops.anonymizer.pixels import NoRegions
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.anonymizer.verify import Residue


def anonymize(
    source: Annotated[Path, typer.Argument(help="A DICOM file or a folder of them.", exists=True)],
    out: Annotated[Path, typer.Argument(help="Output folder (created).")],
) -> None:
    """PS3.15 basic profile + modified dates + clean pixel data; outputs named by their new UIDs.

    The secret comes from FETALMLOPS_ANONYMIZER_SECRET, so runs with the same secret give the
    same pseudonyms as the service. A file the verification gate refuses is not written.
    """
    try:
        policy = AnonymizerSettings().policy()
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    out.mkdir(parents=True, exist_ok=True)
    refused: list[str] = []
    with Progress() as progress:
        task = progress.add_task("anonymizing", total=len(files))
        for path in files:
            try:
                result = anonymize_dicom(path.read_bytes(), policy)
                (out / f"{result.sop_instance_uid}.dcm").write_bytes(result.data)
            except (NoRegions, Residue) as exc:
                refused.append(f"{path}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # not DICOM, or not decodable: said, not fatal
                refused.append(f"{path}: not a readable DICOM file ({type(exc).__name__})")
            progress.advance(task)
    typer.echo(f"{len(files) - len(refused)} anonymized into {out}, {len(refused)} refused")
    for line in refused:
        typer.echo(f"  refused {line}", err=True)
    if refused:
        raise typer.Exit(1)


# The same command standalone, for `python -m`-style use and tests.
app = typer.Typer(help="De-identify DICOM files offline with the anonymizer's policy.")
app.command()(anonymize)
