"""`fetalmlops phantom`: generate a synthetic fetal-ultrasound dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.profiles import DEFAULT_MIX, PROFILES
from fetalmlops.datasets.phantom.sheet import contact_sheet

app = typer.Typer(no_args_is_help=True, help="Synthetic fetal-ultrasound phantom datasets.")


@app.command("generate")
def generate_command(
    patients: Annotated[int, typer.Option(min=1, help="Number of patients (mothers).")],
    out: Annotated[Path, typer.Option(help="Output folder (created).")],
    profile: Annotated[
        list[str] | None,
        typer.Option(help=f"Scanner profile, repeatable: {', '.join(PROFILES)} (default: all)."),
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option(help="png, dicom (with PHI) or both.")
    ] = OutputFormat.PNG,
    seed: Annotated[int, typer.Option(help="Same seed, same dataset, byte for byte.")] = 0,
    difficulty: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 easy … 1 hard.")] = 0.5,
    workers: Annotated[int, typer.Option(min=1, help="Processes.")] = os.cpu_count() or 1,
) -> None:
    """Generate PNG and/or DICOM images with labels.csv, patient-level splits and PHI sidecars."""
    try:
        specs = plan(patients, seed, tuple(profile or DEFAULT_MIX))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--profile") from exc
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("rendering", total=len(specs))
        manifest = generate(
            out, specs, seed, format, difficulty, workers, lambda: progress.advance(task)
        )
    typer.echo(f"{manifest['images']} images of {manifest['patients']} patients in {out}")
    typer.echo(f"per label: {manifest['per_label']}")
    typer.echo(f"per split: {manifest['per_split']}  per profile: {manifest['per_profile']}")


@app.command("profiles")
def profiles_command() -> None:
    """List the scanner profiles and what distinguishes them."""
    for p in PROFILES.values():
        typer.echo(
            f"{p.name:<10} {p.device:<32} {p.cols}x{p.rows}  {p.frequency_mhz} MHz  "
            f"DR {p.dynamic_range_db:.0f} dB  beams {p.lateral_samples}  noise {p.noise_floor}"
        )


@app.command("sheet")
def sheet_command(
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("docs/phantom.png"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a contact sheet: frames per plane (columns) and scanner profile (rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(seed).save(out, optimize=True)
    typer.echo(f"wrote {out}")
