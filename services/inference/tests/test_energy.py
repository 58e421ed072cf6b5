"""Energy accounts: a window's energy shared by predictions among the versions it served, and
the accountant measuring real windows with CodeCarbon and sending them on the bus."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from fetalmlops.common.bus import EmbeddedBus, read_event
from fetalmlops.inference.energy import Accountant, Tally, accounts
from fetalmlops.v1 import predictions_pb2

TOPIC = "fetal.inference.energy"


def event(version: int, device: str = "cpu") -> predictions_pb2.PredictionMade:
    return predictions_pb2.PredictionMade(
        model_name="fetal-planes", model_version=version, compute_device=device
    )


def test_a_window_is_shared_among_versions_by_predictions() -> None:
    tally = Tally()
    tally.count([event(1), event(1), event(1)])  # one request of three images
    tally.count([event(2)])
    requests, predictions = tally.take()
    assert tally.take() == (Counter(), Counter())
    start = datetime(2026, 12, 6, tzinfo=UTC)
    made = accounts("pod-a", start, start + timedelta(seconds=60), 100.0, "estimated", requests,
                    predictions)  # fmt: skip
    assert [(a.model_version, a.requests, a.predictions) for a in made] == [(1, 1, 3), (2, 1, 1)]
    assert [a.energy_joules for a in made] == pytest.approx([75.0, 25.0])
    assert len({a.account_id for a in made}) == 2 and all(a.method == "estimated" for a in made)
    assert made[0].window_end.ToDatetime(tzinfo=UTC) == start + timedelta(seconds=60)


def test_the_accountant_measures_each_window_and_names_its_method() -> None:
    bus = EmbeddedBus(partitions=1)
    accountant = Accountant(bus, TOPIC, "inference", "pod-a", 2.0, "FRA")
    accountant.start()
    accountant.tally.count([event(1), event(1)])
    time.sleep(2.5)  # the first window closes, the second opens
    accountant.tally.count([event(1)])
    accountant.close()  # the second window is accounted too
    subscription = bus.subscribe([TOPIC], "check")
    sent = [read_event(r) for r in subscription.poll(0.1)]
    assert [e.predictions for e in sent] == [2, 1]  # type: ignore[attr-defined]
    for account in sent:
        assert isinstance(account, predictions_pb2.InferenceEnergy)
        assert account.energy_joules > 0 and "CPU" in account.method
