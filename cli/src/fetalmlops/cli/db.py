"""`fetalmlops db`: apply or roll back the schema on the configured database."""

from __future__ import annotations

from typing import Annotated

import typer

from fetalmlops.common.db import migrate
from fetalmlops.common.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Database migrations (Alembic).")

Url = Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: FETALMLOPS_DATABASE_URL).")]


@app.command(help="Upgrade the schema to a revision (default: the newest).")
def upgrade(revision: str = "head", url: Url = None) -> None:
    migrate.upgrade(url or Settings().database_url, revision)
    typer.echo(f"database at {migrate.current(url or Settings().database_url)}")


@app.command(help="Downgrade the schema to a revision (`base` removes every table).")
def downgrade(revision: str, url: Url = None) -> None:
    migrate.downgrade(url or Settings().database_url, revision)
    typer.echo(f"database at {migrate.current(url or Settings().database_url)}")


@app.command(help="Print the schema revision the database is at.")
def current(url: Url = None) -> None:
    typer.echo(migrate.current(url or Settings().database_url))
