"""Labels may arrive before their image is catalogued; one reading per annotator and image.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

A label names its image by the image's pseudonymous id, which the anonymizer derives; the
image row appears when the anonymizer has published it, possibly after the label. The foreign
key would refuse such a label, so it goes, and snapshots join labels to images instead. The
unique pair makes a replayed label event an update, never a second row.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_constraint("fk_labels_image_id_images", type_="foreignkey")
        batch.create_unique_constraint("uq_labels_image_id_annotator", ["image_id", "annotator"])


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.drop_constraint("uq_labels_image_id_annotator", type_="unique")
        batch.create_foreign_key(
            "fk_labels_image_id_images", "images", ["image_id"], ["id"], ondelete="CASCADE"
        )
