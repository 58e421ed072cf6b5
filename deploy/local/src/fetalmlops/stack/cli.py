"""``fetalmlops stack up|down|status|env``: the local stack from a terminal."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Annotated

import typer

from fetalmlops.stack.component import ComponentStatus
from fetalmlops.stack.config import SERVICES
from fetalmlops.stack.errors import StackError

app = typer.Typer(
    help="The real local stack without containers: Kafka (KRaft), MinIO and PostgreSQL on "
    "loopback. Configure with FETALMLOPS_STACK_* variables (home, ports).",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _reported() -> Iterator[ModuleType]:
    """The stack's operations; a StackError is the user's to fix: its message, not a traceback.

    The stack is imported here, not above: it loads the MinIO client and the database drivers,
    which `fetalmlops stack --help` need not wait for.
    """
    from fetalmlops.stack import stack

    try:
        yield stack
    except StackError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def _step(message: str) -> None:
    typer.echo(f"  - {message}")


def _table(statuses: list[ComponentStatus]) -> str:
    rows = [("COMPONENT", "STATE", "PID", "PORTS", "LOG")]
    for s in statuses:
        state = "running" if s.running else "stopped"
        rows.append((s.name, state, str(s.pid or "-"), s.port_numbers, str(s.log)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


@app.command()
def up() -> None:
    """Start Kafka, MinIO and PostgreSQL (fetched/built on first use) and provision them."""
    began = time.monotonic()
    with _reported() as stack:
        statuses = stack.up(progress=_step)
    typer.echo(_table(statuses))
    typer.echo(f"stack up in {time.monotonic() - began:.1f} s; point a shell at it with:")
    typer.echo('  eval "$(fetalmlops stack env --service ingest)"')


@app.command()
def down() -> None:
    """Stop every component of the stack; data stays for the next `up`."""
    with _reported() as stack:
        stack.down(progress=_step)
    typer.echo("stack down")


@app.command()
def status() -> None:
    """Show each component, its pid, ports and log file; exit code 1 unless all are running."""
    with _reported() as stack:
        statuses = stack.status()
    typer.echo(_table(statuses))
    if not all(s.running for s in statuses):
        raise typer.Exit(1)


@app.command()
def env(
    service: Annotated[
        str | None,
        typer.Option(help=f"Use this service's credentials ({', '.join(SERVICES)}); "
                     "default: MinIO root and the database owner."),
    ] = None,
) -> None:  # fmt: skip
    """Print `export FETALMLOPS_...` lines that point a service at the stack."""
    with _reported() as stack:
        typer.echo(stack.env(service), nl=False)
