"""`fetalmlops up`: every service together, in the foreground, until Ctrl-C."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fetalmlops.common.settings import Settings
from fetalmlops.common.telemetry import configure_logging, configure_tracing
from fetalmlops.up.endpoints import endpoints, health, rows, table
from fetalmlops.up.layout import DEFAULT_DATA_DIR, Choices, Layout, Ports, load_or_make_secrets

HEALTH_EVERY_S = 2.0


def up(
    data_dir: Annotated[
        Path, typer.Option(help="Where the platform keeps its state (kept between runs).")
    ] = DEFAULT_DATA_DIR,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="On the real local stack (Kafka, MinIO, PostgreSQL; started if it is not "
            "running, and then stopped again) instead of the embedded stand-ins.",
        ),
    ] = False,
    http_port: Annotated[
        int, typer.Option(help="Ingest's HTTP port; the other services take the next ones.")
    ] = Ports.http_base,
    scp_port: Annotated[int, typer.Option(help="The DICOM C-STORE SCP's port.")] = Ports.scp,
    model: Annotated[str, typer.Option(help="The model trained and served.")] = "fetal-planes",
    database: Annotated[
        str | None,
        typer.Option(help="With --stack: another database of the stack's PostgreSQL (migrated)."),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="The model's change-control plan (read when first needed, so it may be "
            "written after the start); none: the trainer's promotion floors decide."
        ),
    ] = None,
) -> None:
    """Every service — ingest (HTTP and C-STORE), anonymizer, trainer, inference, monitor — in
    this process, on the embedded bus, directory store and SQLite (or the real stack with
    --stack), until Ctrl-C."""
    from fetalmlops.up import services, together  # torch: only once the command runs

    layout = Layout(data_dir.expanduser().resolve())
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(service_name="fetalmlops-up")
    configure_logging(settings, layout.log)
    logging.captureWarnings(True)  # libraries' deprecation notes: to the log, not the table
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the table's health probes
    configure_tracing(settings)
    choices = Choices(
        layout=layout,
        ports=Ports(http_port, scp_port),
        stack=stack,
        model=model,
        plan=None if plan is None else plan.expanduser().resolve(),
        secrets=load_or_make_secrets(layout.secrets),
        database=database,
    )
    typer.echo(f"starting every service on the {'local stack' if stack else 'embedded stand-ins'}")
    started_stack = stack and start_stack()
    try:
        platform = services.build(choices)
        document = endpoints(choices, platform.ae_title)
        together.run(platform, lambda stop: report(document, layout, stop))
    finally:
        layout.endpoints.unlink(missing_ok=True)
        if started_stack:
            from fetalmlops.stack.stack import down

            down()
    typer.echo("stopped: every service, no port left open")


def report(document: dict[str, Any], layout: Layout, stop: threading.Event) -> None:
    """Once every service answers: the table and ``endpoints.json``; then each change of
    health, until ``stop``."""
    urls: dict[str, str] = document["services"]
    while not stop.is_set() and any(health(url) == "down" for url in urls.values()):
        time.sleep(0.2)
    if stop.is_set():
        return
    states = {name: health(url) for name, url in urls.items()}
    typer.echo(table(rows(document, states)))
    typer.echo(f"operator token: {layout.secrets} · log: {layout.log} · Ctrl-C stops everything")
    layout.endpoints.write_text(json.dumps(document, indent=2), encoding="utf-8")
    while not stop.wait(HEALTH_EVERY_S):
        for name, url in urls.items():
            now = health(url)
            if now != states[name] and not stop.is_set():
                typer.echo(f"{time.strftime('%H:%M:%S')} {name}: {now}")
                states[name] = now


def start_stack() -> bool:
    """Start the local stack unless it runs; whether this call started it."""
    from fetalmlops.stack.stack import status
    from fetalmlops.stack.stack import up as stack_up

    if all(component.running for component in status()):
        return False
    typer.echo("starting the local stack (Kafka, MinIO, PostgreSQL)…")
    stack_up()
    return True
