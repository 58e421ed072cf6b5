"""The model card's change history, from the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from fetalmlops.trainer.card.history import HEADING, Change, change_history, with_history

AT = datetime(2026, 12, 7, 6, 30, tzinfo=UTC)


def test_each_entry_is_a_row_with_its_reason_and_hash() -> None:
    gate = {"passed": True, "checks": [], "champion_version": 1, "plan_version": "2026.1"}
    history = change_history(
        [
            Change(AT, "trainer", "registered", {"snapshot_id": "ds-1", "parent_version": 1},
                   "a" * 64),
            Change(AT, "trainer", "gate passed", gate, "b" * 64),
            Change(AT, "monitor", "rollout: promote", {"reason": "canary met its minimums"},
                   "c" * 64),
            Change(AT, "person:ml-lead", "approved", {"reason": "figures | reviewed"}, "d" * 64),
        ]
    )  # fmt: skip
    lines = history.splitlines()
    assert lines[0] == HEADING
    registered = "| trainer | registered | snapshot ds-1, answering v1's drift | `aaaaaaaaaaaa` |"
    assert f"| 2026-12-07 06:30:00 UTC {registered}" in lines
    assert any("passed (champion v1, plan 2026.1)" in line for line in lines)
    assert any("canary met its minimums" in line for line in lines)
    assert any("figures \\| reviewed" in line for line in lines)  # a pipe keeps the table


def test_the_section_is_replaced_not_repeated() -> None:
    card = "# Model card\n\nBody.\n"
    once = with_history(card, change_history([]))
    twice = with_history(once, change_history([Change(AT, "trainer", "promoted", {}, "e" * 64)]))
    assert twice.count(HEADING) == 1 and twice.startswith("# Model card\n\nBody.\n\n")
    assert "promoted" in twice and "No entry" not in twice
