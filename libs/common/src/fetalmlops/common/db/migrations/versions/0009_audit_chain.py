"""The audit trail, hash-chained and append-only.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Each entry gains the hash of the entry before it and its own (`fetalmlops.common.db.audit`);
entries already written are chained in id order. On PostgreSQL a trigger refuses UPDATE and
DELETE on the table, for every role: an entry is only ever followed by another.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fetalmlops.common.db.audit import GENESIS, entry_hash
from fetalmlops.common.db.columns import JSONDocument, UtcDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_LOG = sa.table(
    "audit_log",
    sa.column("id", sa.Integer()),
    sa.column("at", UtcDateTime()),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("subject", sa.String()),
    sa.column("details", JSONDocument),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)

APPEND_ONLY = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
"""


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    prev = GENESIS
    for row in connection.execute(sa.select(AUDIT_LOG).order_by(AUDIT_LOG.c.id)).all():
        digest = entry_hash(prev, row.at, row.actor, row.action, row.subject, row.details)
        connection.execute(
            AUDIT_LOG.update().where(AUDIT_LOG.c.id == row.id).values(prev_hash=prev, hash=digest)
        )
        prev = digest
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_hash"), ["hash"])
    if connection.dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_hash"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
