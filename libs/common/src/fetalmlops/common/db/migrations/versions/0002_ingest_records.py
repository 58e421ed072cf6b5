"""Ingest records: one row per raw object, with when it was announced.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM_LENGTH = 32  # as fetalmlops.common.db.columns, written out so this revision never changes
CHANNELS = ("kafka", "stow_rs", "c_store", "rest", "import")


def upgrade() -> None:
    allowed = ", ".join(f"'{value}'" for value in CHANNELS)
    op.create_table(
        "ingest_records",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("raw_key", sa.String(1024), nullable=False),
        sa.Column("media_type", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(ENUM_LENGTH), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.Integer(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            f"channel IN ({allowed})", name=op.f("ck_ingest_records_ingest_channel")
        ),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_ingest_records")),
    )


def downgrade() -> None:
    op.drop_table("ingest_records")
