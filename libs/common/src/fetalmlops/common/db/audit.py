"""The audit trail: append-only and hash-chained, written by every service through `append`.

Each entry carries the hash of the entry before it (`prev_hash`) and its own `hash`, a SHA-256
over its content and that link (canonical JSON). Changing an entry breaks its own hash;
inserting or deleting one breaks the link of the entry after it; `verify` names the entry
where the chain breaks. Rewriting every hash after a change is caught only against a head
hash kept elsewhere, which `verify` takes (`fetalmlops audit verify --head`).

Appends are serialised (a transaction-scoped advisory lock on PostgreSQL; SQLite has one
writer), so two services never chain onto the same predecessor, and on PostgreSQL a trigger
refuses UPDATE and DELETE on the table (migration 0009): an entry is never edited, only
followed by another. Details must be PHI-free like every other table outside the raw zone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from fetalmlops.common.db.columns import utcnow
from fetalmlops.common.db.models import AuditEntry

GENESIS = "0" * 64  # the link of the first entry
LOCK_KEY = 0x66657461_6C617564  # "fetalaud": PostgreSQL's advisory lock for appends


def entry_hash(
    prev_hash: str, at: datetime, actor: str, action: str, subject: str, details: Mapping[str, Any]
) -> str:
    """SHA-256 (hex) of the entry's canonical JSON: its fields, its time in UTC to the
    microsecond, and the hash it follows."""
    content = {
        "prev_hash": prev_hash,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def append(
    session: Session, actor: str, action: str, subject: str, details: Mapping[str, Any]
) -> AuditEntry:
    """The next entry of the chain, added to ``session`` (durable with its transaction)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(LOCK_KEY)))
    last = session.scalars(sa.select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    prev_hash = last.first() or GENESIS
    at = utcnow()
    plain = json.loads(json.dumps(dict(details)))  # as the database will give it back
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        details=plain,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, at, actor, action, subject, plain),
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Break:
    entry_id: int
    problem: str


def verify(entries: Iterable[AuditEntry], head: str | None = None) -> list[Break]:
    """Where the chain of ``entries`` (in id order) breaks; [] when it holds (and ends at
    ``head``, when given)."""
    breaks, prev, last_id = [], GENESIS, 0
    for entry in entries:
        if entry.prev_hash != prev:
            breaks.append(
                Break(entry.id, "does not follow the entry before it: one was inserted or deleted")
            )
        recomputed = entry_hash(
            entry.prev_hash, entry.at, entry.actor, entry.action, entry.subject, entry.details
        )
        if recomputed != entry.hash:
            breaks.append(Break(entry.id, "its content is not what was written"))
        prev, last_id = entry.hash, entry.id
    if head is not None and prev != head:
        breaks.append(Break(last_id, f"the chain ends at {prev[:12]}…, not at the head given"))
    return breaks


def entries(session: Session, subject_prefix: str = "") -> list[AuditEntry]:
    """The trail in order, or the entries whose subject starts with ``subject_prefix``."""
    query = sa.select(AuditEntry).order_by(AuditEntry.id)
    if subject_prefix:
        query = query.where(AuditEntry.subject.startswith(subject_prefix, autoescape=True))
    return list(session.scalars(query))
