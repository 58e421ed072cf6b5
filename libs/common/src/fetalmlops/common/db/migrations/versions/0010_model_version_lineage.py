"""A model version's recipe and parent: what a retrain repeats, and what it answers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

`recipe` is the training run's configuration (backbone, strategy, hyper-parameters), so a
retrain after a drift alarm repeats the drifted version's recipe on fresh data instead of the
trainer's defaults; `parent_version` names that version. Versions registered before keep both
empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "recipe", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
        batch_op.add_column(sa.Column("parent_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("parent_version")
        batch_op.drop_column("recipe")
