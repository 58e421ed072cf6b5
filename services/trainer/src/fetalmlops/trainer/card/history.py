"""The model card's change history: the version's entries of the audit trail, in order.

Generated from the hash-chained trail (`fetalmlops.common.db.audit`), never written by hand:
registration with its lineage, the gate's verdict, the rollout's moves, approvals, promotion,
archiving or rejection. Each row names its entry's hash, so a reader can check it against
`fetalmlops audit show` and `fetalmlops audit verify`. `with_history` replaces the section in a
card that has one, so the card is rewritten whole at every change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fetalmlops.trainer.card.markdown import table

HEADING = "## Change history"


@dataclass(frozen=True)
class Change:
    at: datetime
    actor: str
    action: str
    details: Mapping[str, Any]
    hash: str


def change_history(changes: Sequence[Change]) -> str:
    """The section: one row per entry, oldest first."""
    if not changes:
        return f"{HEADING}\n\nNo entry in the audit trail yet."
    rows = [
        [
            change.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            change.actor,
            change.action,
            summary(change.details),
            f"`{change.hash[:12]}`",
        ]
        for change in changes
    ]
    intro = (
        "From the audit trail (`fetalmlops audit show --model MODEL`); each entry's hash "
        "is the first 12 characters of its link in the chain `fetalmlops audit verify` checks."
    )
    return f"{HEADING}\n\n{intro}\n\n" + table(("When", "By", "What", "Why", "Entry"), rows)


def summary(details: Mapping[str, Any]) -> str:
    """The one line a reader needs of an entry's details."""
    if "reason" in details and isinstance(details["reason"], str):
        return details["reason"]
    if "passed" in details and "checks" in details:
        failed = [c["name"] for c in details["checks"] if not c.get("passed")]
        champion = details.get("champion_version") or "none"
        verdict = "passed" if details["passed"] else f"failed: {', '.join(failed)}"
        return f"{verdict} (champion v{champion}, plan {details.get('plan_version', '?')})"
    if "reasons" in details:
        return "; ".join(str(reason) for reason in details["reasons"])
    if "replaced_by" in details:
        return f"replaced by v{details['replaced_by']}"
    if "snapshot_id" in details:
        parent = details.get("parent_version")
        lineage = f", answering v{parent}'s drift" if parent else ""
        return f"snapshot {details['snapshot_id']}{lineage}"
    return ""


def with_history(card: str, history: str) -> str:
    """``card`` with its change history section replaced, or added at the end."""
    kept = card.split(f"\n{HEADING}\n", 1)[0].rstrip("\n")
    return f"{kept}\n\n{history}\n"
