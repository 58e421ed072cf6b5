"""Reading conditions the way the API server writes them, early and late."""

from __future__ import annotations

from fetalmlops.cluster.kube import condition


def test_a_condition_counts_only_when_true() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert condition(ready, "Ready")
    assert not condition(not_ready, "Ready")
    assert not condition(ready, "Established")


def test_a_fresh_object_without_conditions_is_not_ready() -> None:
    assert not condition({"status": {"conditions": None}}, "Established")
    assert not condition({"status": None}, "Established")
    assert not condition({}, "Established")
    assert not condition(None, "Established")
