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

from fetalmlops.cli.lazy import lazy_group

# Every command group is loaded when it runs, so that `fetalmlops --help` or `fetalmlops stack`
# never waits for torch: the CLI's own, then each installed service's (a Typer app per name
# becomes a group, `fetalmlops phantom generate`; a function a command, `fetalmlops anonymize`).
COMMANDS = {
    "stack": "fetalmlops.stack.cli:app",
    "db": "fetalmlops.cli.db:app",
    "settings": "fetalmlops.cli.settings_doc:settings",
} | {ep.name: ep.value for ep in entry_points(group="fetalmlops.commands")}
SERVICES = {ep.name: ep for ep in entry_points(group="fetalmlops.services")}

app = typer.Typer(
    cls=lazy_group(COMMANDS),
    help="FetalMLOps: fetal-ultrasound standard-plane classification, from PACS to KServe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def fetalmlops() -> None:
    """FetalMLOps: fetal-ultrasound standard-plane classification, from PACS to KServe."""


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
