"""`fetalmlops plan validate`: a change-control plan checked before it governs anything.
`fetalmlops audit show|verify`: the audit trail in the terminal, and whether its chain holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fetalmlops.changecontrol.plan import PlanError, load_plan, plan_digest
from fetalmlops.common import db
from fetalmlops.common.db import create_engine_for, session_scope
from fetalmlops.common.db.audit import entries, verify
from fetalmlops.common.settings import Settings

plan_app = typer.Typer(
    no_args_is_help=True,
    help="The change-control plan: what the loop may change on its own, and how a change is "
    "accepted.",
)
audit_app = typer.Typer(
    no_args_is_help=True,
    help="The hash-chained audit trail: every alarm, training, gate and promotion.",
)


@plan_app.callback()
def plan() -> None:
    """The change-control plan: what the loop may change on its own, and how a change is
    accepted."""


@plan_app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The plan, a YAML file.")],
) -> None:
    """Check a plan and summarise it; exit 2 and name each problem if it is not valid."""
    try:
        loaded = load_plan(file)
    except PlanError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    rollout, approval = loaded.rollout, loaded.approval
    shadow = (
        f"shadow for {rollout.shadow_min_predictions} predictions, then "
        if rollout.shadow
        else "no shadow, "
    )
    approvers = ", ".join(approval.approvers) or "(no one named)"
    typer.echo(f"model            {loaded.model}")
    typer.echo(f"plan version     {loaded.plan_version}")
    typer.echo(f"digest           sha256:{plan_digest(loaded)}")
    typer.echo(f"allowed changes  {', '.join(loaded.allowed_changes) or '(none)'}")
    typer.echo(f"rollout          {shadow}canary {rollout.canary_fraction:.0%} of requests")
    typer.echo(
        f"approval         required by {approvers}"
        if approval.required
        else f"approval         not required (allowed: {approvers})"
    )


@audit_app.callback()
def audit() -> None:
    """The hash-chained audit trail: every alarm, training, gate and promotion."""


@audit_app.command()
def show(
    model: Annotated[str, typer.Option(help="Only this model's entries.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="The entries as JSON lines.")] = False,
) -> None:
    """The entries in order: when, who, what, to which subject, and the details."""
    with session_scope(create_engine_for(migrated_database())) as session:
        for entry in entries(session, f"model:{model}:" if model else ""):
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "id": entry.id,
                            "at": entry.at.isoformat(),
                            "actor": entry.actor,
                            "action": entry.action,
                            "subject": entry.subject,
                            "details": entry.details,
                            "hash": entry.hash,
                        },
                        sort_keys=True,
                    )
                )
            else:
                typer.echo(
                    f"{entry.id:>6}  {entry.at:%Y-%m-%d %H:%M:%S}  {entry.actor:<10} "
                    f"{entry.action:<18} {entry.subject}  {json.dumps(entry.details)}"
                )


@audit_app.command(name="verify")
def verify_trail(
    head: Annotated[
        str | None,
        typer.Option(help="The last entry's hash as recorded elsewhere: a rewritten tail fails."),
    ] = None,
) -> None:
    """Check every link of the chain; exit 1 and name the entries where it breaks."""
    with session_scope(create_engine_for(migrated_database())) as session:
        trail = entries(session)
        breaks = verify(trail, head)
    if breaks:
        for found in breaks:
            typer.echo(f"entry {found.entry_id}: {found.problem}", err=True)
        raise typer.Exit(1)
    last = trail[-1].hash if trail else "(empty)"
    typer.echo(f"the audit trail holds: {len(trail)} entries, head {last}")


def migrated_database() -> str:
    """The configured database URL; exit 2 with the remedy when it holds no audit trail yet."""
    url = Settings().database_url
    if db.current(url) is None:
        typer.echo(
            "this database has no audit trail yet (never migrated): run `fetalmlops db upgrade`",
            err=True,
        )
        raise typer.Exit(2)
    return url
