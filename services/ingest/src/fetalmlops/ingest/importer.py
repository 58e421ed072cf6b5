"""`fetalmlops dataset import`: a labelled dataset pushed through ingest's API, resumably.

Every image goes through the same HTTP upload (validation, raw zone, announcement) as any
client's, then its label through the labels API; nothing is written around the service. A
journal beside the cache remembers finished images, so an interrupted import continues where
it stopped (and the raw zone's duplicate detection makes a repeated upload harmless anyway).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from fetalmlops.datasets.readers import DatasetError, DatasetFormat, Sample, detect, read_dataset

app = typer.Typer(no_args_is_help=True, help="Datasets: import labelled images through ingest.")

JOURNALS = Path.home() / ".cache" / "fetalmlops" / "imports"


class Journal:
    """Finished images of one dataset import, one JSON line each (append-only, crash-safe)."""

    def __init__(self, dataset: Path, fmt: DatasetFormat, directory: Path = JOURNALS) -> None:
        key = hashlib.sha256(f"{dataset.resolve()}|{fmt.value}".encode()).hexdigest()[:16]
        self.path = directory / f"{key}.jsonl"
        directory.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, str] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.done[entry["path"]] = entry["sha256"]

    def record(self, sample: Sample, sha256: str) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"path": str(sample.path), "sha256": sha256}) + "\n")
        self.done[str(sample.path)] = sha256


class Refused(Exception):
    def __init__(self, sample: Sample, status: int, detail: str) -> None:
        super().__init__(f"{sample.path.name}: {status} {detail}")


class Unauthorised(Exception):
    """The token is missing, unknown or lacks a scope: no image would get through."""


def _checked(response: httpx.Response, sample: Sample) -> httpx.Response:
    if response.status_code in (401, 403):
        raise Unauthorised(f"{response.status_code}: {response.json().get('detail', '')}")
    if response.status_code >= 400:
        raise Refused(
            sample, response.status_code, str(response.json().get("detail", response.text))
        )
    return response


def push(client: httpx.Client, sample: Sample, annotator: str) -> str:
    """Upload one image and attach its label; the raw sha256 ingest assigned."""
    upload = _checked(
        client.post(
            "/v1/images",
            files={"file": (sample.path.name, sample.path.read_bytes())},
            data={
                "channel": "import",
                "cohort": sample.cohort or "",
                "patient_id": sample.patient or "",
            },
        ),
        sample,
    )
    sha256 = str(upload.json()["sha256"])
    label = {
        "raw_sha256": sha256,
        "plane": sample.plane.value,
        "brain_plane": sample.brain_plane.value if sample.brain_plane else None,
        "annotator": annotator,
    }
    _checked(client.post("/v1/labels", json=label), sample)
    return sha256


@app.command("import")
def import_command(
    path: Annotated[Path, typer.Argument(help="Dataset folder or CSV file.")],
    format: Annotated[
        DatasetFormat | None, typer.Option(help="Dataset format (default: detected).")
    ] = None,
    url: Annotated[
        str, typer.Option(envvar="FETALMLOPS_INGEST_URL", help="Ingest service URL.")
    ] = "http://127.0.0.1:8080",
    token: Annotated[
        str,
        typer.Option(
            envvar="FETALMLOPS_INGEST_TOKEN", help="Bearer token (images:write, labels:write)."
        ),
    ] = "",
    annotator: Annotated[
        str, typer.Option(help="Annotator id recorded with every label.")
    ] = "dataset-import",
    limit: Annotated[
        int | None, typer.Option(help="Stop after this many images (resume later).")
    ] = None,
    journal_dir: Annotated[Path, typer.Option(help="Where import journals are kept.")] = JOURNALS,
) -> None:
    """Import a labelled dataset: FETAL_PLANES_DB, African cohort, folder per class or CSV."""
    try:
        samples = read_dataset(path, format)
    except DatasetError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    journal = Journal(path, format or detect(path), journal_dir)
    remaining = [s for s in samples if str(s.path) not in journal.done]
    pending = remaining[:limit]
    refused: list[str] = []
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=60) as client,
        Progress(*columns) as progress,
    ):
        task = progress.add_task("importing", total=len(pending))
        for sample in pending:
            try:
                journal.record(sample, push(client, sample, annotator))
            except Refused as exc:
                refused.append(str(exc))
            except Unauthorised as exc:
                typer.echo(f"ingest refused the token ({exc}); nothing more was sent", err=True)
                raise typer.Exit(2) from None
            except httpx.TransportError as exc:
                typer.echo(f"ingest at {url} unreachable ({exc}); run again to resume", err=True)
                raise typer.Exit(3) from None
            progress.advance(task)
    imported, later = len(pending) - len(refused), len(remaining) - len(pending)
    already = len(samples) - len(remaining)
    typer.echo(f"{imported} imported, {already} already done, {len(refused)} refused, {later} left")
    for line in refused:
        typer.echo(f"  refused {line}", err=True)
    if refused:
        raise typer.Exit(1)
