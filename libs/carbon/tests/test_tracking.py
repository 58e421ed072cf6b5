"""The real CodeCarbon tracker around real CPU work: energy, emissions, and nothing left behind."""

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from codecarbon.core.resource_tracker import ResourceTracker

from fetalmlops.carbon.tracking import Footprint, carbon_intensity_g_per_kwh, tracked


def burn_cpu(seconds: float) -> None:
    matrix = np.random.default_rng(0).random((300, 300))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        matrix = np.tanh(matrix @ matrix)


def threads() -> set[int]:
    return {thread.ident for thread in threading.enumerate() if thread.ident is not None}


def timers_left(before: set[int]) -> list[threading.Thread]:
    """CodeCarbon's timer threads started since ``before`` and still alive (other tests' threads
    may come and go meanwhile: only timers are ours to account for)."""
    return [
        t for t in threading.enumerate() if t.ident not in before and isinstance(t, threading.Timer)
    ]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every attempt to open a connection, refused and recorded."""
    attempts: list[object] = []

    def refuse(_socket: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_cpu_work_costs_energy_priced_at_each_countrys_intensity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[object]
) -> None:
    monkeypatch.chdir(tmp_path)
    before = threads()

    footprints = {}
    for country in ("FRA", "POL"):
        with tracked(country) as meter:
            burn_cpu(1.0)
        assert meter.footprint is not None
        footprints[country] = meter.footprint

    for country, footprint in footprints.items():
        assert footprint.country_iso_code == country
        assert footprint.energy_kwh > 0
        assert footprint.emissions_kg_co2e > 0
        assert 1.0 <= footprint.duration_s < 10.0
        # kg/kWh is the table's g/kWh over 1000: CodeCarbon's own intensity, nothing else.
        assert footprint.emissions_kg_co2e / footprint.energy_kwh == pytest.approx(
            carbon_intensity_g_per_kwh(country) / 1000, rel=1e-9
        )
        assert "CPU" in footprint.method
        assert "RAM" in footprint.method
    # France's nuclear-heavy grid against Poland's coal: 56 against 662 g/kWh in 3.3.2.
    intensity = {c: f.emissions_kg_co2e / f.energy_kwh for c, f in footprints.items()}
    assert intensity["POL"] > 5 * intensity["FRA"]

    assert list(tmp_path.iterdir()) == []
    assert timers_left(before) == []
    assert offline == []


def test_a_failing_run_is_still_measured_and_its_error_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = threads()

    with pytest.raises(RuntimeError, match="diverged"), tracked("DEU") as meter:
        burn_cpu(0.3)
        raise RuntimeError("loss diverged")

    assert meter.footprint is not None
    assert meter.footprint.energy_kwh > 0
    assert timers_left(before) == []
    assert list(tmp_path.iterdir()) == []


def test_a_codecarbon_failure_leaves_the_run_alone_and_the_footprint_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_probe(_self: ResourceTracker) -> None:
        raise RuntimeError("hardware probe failed")

    monkeypatch.setattr(ResourceTracker, "set_CPU_GPU_ram_tracking", broken_probe)
    before = threads()

    with tracked("FRA") as meter:
        result = sum(range(1000))

    assert result == 499500
    assert meter.footprint is None
    assert timers_left(before) == []


def test_an_unknown_country_is_refused_before_anything_starts() -> None:
    before = threads()
    with pytest.raises(ValueError, match="XYZ"), tracked("XYZ"):
        pytest.fail("the block must not run")
    assert timers_left(before) == []


def test_lower_case_codes_are_accepted_and_reported_in_upper_case() -> None:
    assert carbon_intensity_g_per_kwh("fra") == carbon_intensity_g_per_kwh("FRA")
    with tracked("fra") as meter:
        burn_cpu(0.1)
    assert meter.footprint is not None
    assert meter.footprint.country_iso_code == "FRA"


def test_footprint_is_plain_json() -> None:
    footprint = Footprint(
        energy_kwh=1.5e-5,
        emissions_kg_co2e=8.4e-7,
        duration_s=2.0,
        country_iso_code="FRA",
        method="CPU estimated",
    )
    assert Footprint(**json.loads(json.dumps(footprint.to_dict()))) == footprint
