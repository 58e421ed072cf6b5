"""The closed loop's rows: a version's gate verdict, rollouts with their approvals, and the arm
each observed prediction came from.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

A model version may now be a *challenger* (it passed a change-control plan's gate) or
*rejected* (it failed the gate, or was rolled back), and keeps the verdict with its evidence in
``gate``. ``rollouts`` holds each challenger's way to production (one active per model, which a
partial unique index enforces) and ``approvals`` the named sign-offs a plan may require. An
observed prediction names its arm; a shadow's names the champion's prediction of the same image.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STAGES_BEFORE = ("candidate", "production", "archived")
STAGES = ("candidate", "challenger", "production", "archived", "rejected")
ACTIVE = sa.text("phase IN ('shadow', 'canary', 'awaiting_approval')")


def _stages(values: Sequence[str]) -> str:
    return "stage IN ({})".format(", ".join(f"'{value}'" for value in values))


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=False),
        sa.Column("challenger_version", sa.Integer(), nullable=False),
        sa.Column(
            "phase",
            sa.Enum(
                "shadow",
                "canary",
                "awaiting_approval",
                "promoted",
                "rolled_back",
                name="rollout_phase",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("plan_digest", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("published_sequence", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("phase_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint(
            "model_name",
            "challenger_version",
            name=op.f("uq_rollouts_model_name_challenger_version"),
        ),
    )
    op.create_index(
        "uq_rollouts_one_active",
        "rollouts",
        ["model_name"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "approved_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name=op.f("fk_approvals_rollout_id_rollouts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
        sa.UniqueConstraint(
            "rollout_id", "approver", name=op.f("uq_approvals_rollout_id_approver")
        ),
    )
    op.create_index(op.f("ix_approvals_rollout_id"), "approvals", ["rollout_id"])
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gate", JSON, nullable=True))
        batch_op.drop_constraint(batch_op.f("ck_model_versions_model_stage"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_model_versions_model_stage"), _stages(STAGES)
        )
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("arm", sa.String(length=16), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("shadow_of", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("challenger_failed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("latency_ms", sa.Double(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_observed_predictions_shadow_of"), ["shadow_of"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_observed_predictions_shadow_of"))
        batch_op.drop_column("latency_ms")
        batch_op.drop_column("challenger_failed")
        batch_op.drop_column("shadow_of")
        batch_op.drop_column("arm")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_model_versions_model_stage"), type_="check")
        batch_op.create_check_constraint(
            batch_op.f("ck_model_versions_model_stage"), _stages(STAGES_BEFORE)
        )
        batch_op.drop_column("gate")
    op.drop_index(op.f("ix_approvals_rollout_id"), table_name="approvals")
    op.drop_table("approvals")
    op.drop_index("uq_rollouts_one_active", table_name="rollouts")
    op.drop_table("rollouts")
