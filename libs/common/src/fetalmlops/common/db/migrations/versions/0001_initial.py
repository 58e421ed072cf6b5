"""Initial schema: images catalog, labels, dataset snapshots, model registry, reports, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Enum values are written out as check constraints rather than imported from the models, so
this revision keeps building the same schema after the Python enums grow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("canonical_key", sa.String(1024), nullable=True),
        sa.Column("patient_pseudonym", sa.String(64), nullable=True),
        sa.Column("device_manufacturer", sa.String(128), nullable=True),
        sa.Column("device_model", sa.String(128), nullable=True),
        sa.Column("pixel_spacing_mm", sa.Double(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.Integer(), nullable=False),
        sa.Column("cohort", sa.String(64), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("sha256", name=op.f("uq_images_sha256")),
    )
    op.create_index(op.f("ix_images_patient_pseudonym"), "images", ["patient_pseudonym"])
    op.create_index(op.f("ix_images_cohort"), "images", ["cohort"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column("plane", sa.String(32), nullable=False),
        sa.Column("brain_plane", sa.String(32), nullable=True),
        sa.Column("annotator", sa.String(128), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_labels_image_id_images"), ondelete="CASCADE"
        ),
        _one_of(
            "plane",
            [
                "fetal_abdomen",
                "fetal_brain",
                "fetal_femur",
                "fetal_thorax",
                "maternal_cervix",
                "other",
            ],
            "ck_labels_plane",
        ),
        _one_of(
            "brain_plane",
            ["trans_thalamic", "trans_cerebellum", "trans_ventricular", "other"],
            "ck_labels_brain_plane",
        ),
    )
    op.create_index(op.f("ix_labels_image_id"), "labels", ["image_id"])

    op.create_table(
        "dataset_snapshots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("manifest_uri", sa.String(1024), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("split", JSON, nullable=False),
        sa.Column("split_seed", sa.Integer(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_snapshots")),
        sa.UniqueConstraint("content_sha256", name=op.f("uq_dataset_snapshots_content_sha256")),
    )

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("backbone", sa.String(64), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("storage_uri", sa.String(1024), nullable=False),
        sa.Column("artifact_uri", sa.String(1024), nullable=True),
        sa.Column("energy_kwh", sa.Double(), nullable=True),
        sa.Column("emissions_kg_co2e", sa.Double(), nullable=True),
        sa.Column("drift_reference", JSON, nullable=True),
        sa.Column("snapshot_id", sa.String(64), nullable=True),
        _timestamp("created_at"),
        _timestamp("promoted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint(
            "model_name", "version", name=op.f("uq_model_versions_model_name_version")
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["dataset_snapshots.id"],
            name=op.f("fk_model_versions_snapshot_id_dataset_snapshots"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_model_versions_version_positive")),
        _one_of("stage", ["candidate", "production", "archived"], "ck_model_versions_model_stage"),
    )
    op.create_index(op.f("ix_model_versions_snapshot_id"), "model_versions", ["snapshot_id"])
    op.create_index(
        "uq_model_versions_one_production",
        "model_versions",
        ["model_name"],
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    )

    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("endpoint", sa.String(1024), nullable=True),
        _timestamp("deployed_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_deployments_model_version_id_model_versions"),
        ),
    )
    op.create_index(op.f("ix_deployments_model_version_id"), "deployments", ["model_version_id"])

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        _timestamp("window_start", nullable=True),
        _timestamp("window_end", nullable=True),
        sa.Column("payload", JSON, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_reports_model_version_id_model_versions"),
        ),
        _one_of("kind", ["drift", "performance", "carbon"], "ck_reports_report_kind"),
        sa.CheckConstraint(
            "window_start IS NULL OR window_end IS NULL OR window_start <= window_end",
            name=op.f("ck_reports_window_order"),
        ),
    )
    op.create_index(op.f("ix_reports_model_version_id"), "reports", ["model_version_id"])
    op.create_index("ix_reports_kind_created_at", "reports", ["kind", "created_at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes and constraints with it.
    for table in (
        "audit_log",
        "reports",
        "deployments",
        "model_versions",
        "dataset_snapshots",
        "labels",
        "images",
    ):
        op.drop_table(table)
