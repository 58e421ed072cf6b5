"""The `fetalmlops` command.

Its own commands run services, the local stack and database migrations. Every installed service
may add commands of its own through the ``fetalmlops.commands`` entry-point group (a Typer app
per name), so the CLI never imports a service that is not installed.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Annotated

import typer

from fetalmlops.cli import db
from fetalmlops.cli.settings_doc import settings
from fetalmlops.stack.cli import app as stack_app

app = typer.Typer(
    help="FetalMLOps: fetal-ultrasound standard-plane classification, from PACS to KServe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_app, name="stack", help="The real local stack: Kafka, MinIO, PostgreSQL.")
app.add_typer(db.app, name="db", help="Database migrations (Alembic).")
app.command(help="Print every FETALMLOPS_* variable with its default.")(settings)

SERVICES = {ep.name: ep for ep in entry_points(group="fetalmlops.services")}

for command in entry_points(group="fetalmlops.commands"):
    # A Typer app becomes a command group (`fetalmlops phantom generate`), a function a command
    # of its own (`fetalmlops anonymize IN OUT`).
    target = command.load()
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=command.name)
    else:
        app.command(command.name)(target)


@app.command(
    help=f"Run one service in the foreground: {', '.join(sorted(SERVICES)) or 'none installed'}."
)
def run(
    service: Annotated[str, typer.Argument(help="Service name.")],
    port: Annotated[
        int | None, typer.Option(help="HTTP port (default: FETALMLOPS_HTTP_PORT).")
    ] = None,
) -> None:
    if service not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {service!r}; installed: {', '.join(sorted(SERVICES))}",
            param_hint="SERVICE",
        )
    if port is not None:
        os.environ["FETALMLOPS_HTTP_PORT"] = str(port)
    SERVICES[service].load()()
