"""The inference service's energy accounts, kept by the monitor: carbon per 1,000 inferences.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

One row per window of serving, model version and device (`fetal.inference.energy`), keyed by
the account's id so a redelivered account is kept once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "energy_accounts",
        sa.Column("account_id", sa.String(length=256), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("compute_device", sa.String(length=256), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("energy_joules", sa.Double(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("predictions", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_energy_accounts")),
    )


def downgrade() -> None:
    op.drop_table("energy_accounts")
