"""The monitor's tables: the versions it watches, the predictions and feedback it has seen, its
drift windows with the alarm's state, and the retraining requests its alarms made.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

Windows are cut in arrival order (``observed_predictions.seq``) per model version and scanner
segment; a prediction names the window that took it, so a replay after a crash closes the same
windows again. ``retraining_requests`` is an outbox: one row per alarm episode, published once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drift_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=256), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "outcomes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("p_value", sa.Double(), nullable=False),
        sa.Column(
            "estimate", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("cusum", sa.Double(), nullable=False),
        sa.Column("alarm_active", sa.Boolean(), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("fired", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_windows")),
        sa.UniqueConstraint(
            "model_name",
            "model_version",
            "segment",
            "number",
            name=op.f("uq_drift_windows_model_name_model_version_segment_number"),
        ),
    )
    op.create_table(
        "feedback",
        sa.Column("prediction_id", sa.String(length=64), nullable=False),
        sa.Column(
            "true_plane",
            sa.Enum(
                "fetal_abdomen",
                "fetal_brain",
                "fetal_femur",
                "fetal_thorax",
                "maternal_cervix",
                "other",
                name="true_plane",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name=op.f("pk_feedback")),
    )
    op.create_table(
        "monitored_versions",
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("storage_uri", sa.String(length=1024), nullable=False),
        sa.Column(
            "reference", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "alarm_rule", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("energy_kwh", sa.Double(), nullable=True),
        sa.Column("emissions_kg_co2e", sa.Double(), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("model_name", "version", name=op.f("pk_monitored_versions")),
    )
    op.create_table(
        "retraining_requests",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=256), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column(
            "reason", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("traceparent", sa.String(length=64), nullable=True),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_retraining_requests")),
    )
    op.create_table(
        "observed_predictions",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=256), nullable=False),
        sa.Column("predicted", sa.String(length=64), nullable=False),
        sa.Column(
            "probabilities",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "image_stats", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "embedding", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("compute_device", sa.String(length=256), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["window_id"],
            ["drift_windows.id"],
            name=op.f("fk_observed_predictions_window_id_drift_windows"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_observed_predictions")),
        sa.UniqueConstraint("prediction_id", name=op.f("uq_observed_predictions_prediction_id")),
    )
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_observed_predictions_stream",
            ["model_name", "model_version", "segment"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_observed_predictions_window_id"), ["window_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("observed_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_observed_predictions_window_id"))
        batch_op.drop_index("ix_observed_predictions_stream")

    op.drop_table("observed_predictions")
    op.drop_table("retraining_requests")
    op.drop_table("monitored_versions")
    op.drop_table("feedback")
    op.drop_table("drift_windows")
