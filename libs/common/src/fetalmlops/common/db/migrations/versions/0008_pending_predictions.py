"""The monitor's pending predictions, found without reading its windowed ones.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Every prediction asks which predictions of its stream no window has taken yet. The stream
index reads every row of the stream to answer, a cost that grows with its history; this
partial index holds the waiting rows only (fewer than a window's worth per stream), in arrival
order.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "window_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_observed_predictions_pending",
            ["model_name", "model_version", "segment", "seq"],
            unique=False,
            sqlite_where=sa.text(PENDING),
            postgresql_where=sa.text(PENDING),
        )


def downgrade() -> None:
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_observed_predictions_pending")
