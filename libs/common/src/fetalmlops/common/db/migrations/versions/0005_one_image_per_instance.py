"""One catalog image per source instance; every raw copy of it; whether it was announced.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

The same SOP instance may reach the raw zone twice (re-sent in another transfer syntax, or over
STOW-RS after C-STORE): two raw objects, two sha256s, yet one instance. ``images`` gets the
de-identified SOP Instance UID (a keyed pseudonym, unique) that recognises it, and
``image_copies`` maps each raw copy's pseudonym to the one image, so a label naming either
copy's sha256 finds it. ``published_at`` records that fetal.images.anonymized went out, so a
crash between the row and the event leads to the event, once, on redelivery.

Images catalogued before this revision were announced before their row was written: each is
its own first copy, and counts as published when it was created.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("sop_instance_uid", sa.String(64), nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_images_sop_instance_uid", ["sop_instance_uid"])
    op.create_table(
        "image_copies",
        sa.Column("copy_id", sa.String(64), nullable=False),
        sa.Column("image_id", sa.String(64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_image_copies_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("copy_id", name=op.f("pk_image_copies")),
    )
    op.create_index(op.f("ix_image_copies_image_id"), "image_copies", ["image_id"])
    op.execute(
        "INSERT INTO image_copies (copy_id, image_id, created_at)"
        " SELECT id, id, created_at FROM images"
    )
    op.execute("UPDATE images SET published_at = created_at")


def downgrade() -> None:
    op.drop_index(op.f("ix_image_copies_image_id"), table_name="image_copies")
    op.drop_table("image_copies")
    with op.batch_alter_table("images") as batch:
        batch.drop_constraint("uq_images_sop_instance_uid", type_="unique")
        batch.drop_column("published_at")
        batch.drop_column("sop_instance_uid")
