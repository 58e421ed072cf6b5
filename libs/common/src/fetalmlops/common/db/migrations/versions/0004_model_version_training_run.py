"""Model versions remember the training run that registered them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

A training run is named by its snapshot, model name and configuration; a Kubernetes Job that
restarts after registering finds its version by that name instead of registering a second one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("training_run", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_model_versions_training_run", ["training_run"])


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint("uq_model_versions_training_run", type_="unique")
        batch.drop_column("training_run")
