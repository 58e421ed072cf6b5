import json

import pytest

from fetalmlops.monitor.carbon import (
    JOULES_PER_KWH,
    InferenceAccount,
    kwh,
    per_thousand_inferences,
    per_training_run,
)

GPU = "cuda:0 (NVIDIA H100 80GB HBM3)"


def account(
    energy_joules: float,
    predictions: int,
    *,
    version: int = 3,
    device: str = GPU,
    method: str = "nvml",
    requests: int | None = None,
) -> InferenceAccount:
    return InferenceAccount(
        model_name="planes",
        model_version=version,
        compute_device=device,
        energy_joules=energy_joules,
        requests=predictions if requests is None else requests,
        predictions=predictions,
        method=method,
    )


def test_a_kilowatt_hour_is_three_point_six_megajoules() -> None:
    assert JOULES_PER_KWH == 3.6e6
    assert kwh(3.6e6) == 1.0
    assert kwh(1800.0) == pytest.approx(5e-4)


def test_windows_of_one_version_and_device_add_up() -> None:
    # 5.4 MJ = 1.5 kWh over 1,500 predictions (1,000 requests): 1 kWh per 1,000 inferences.
    accounts = [account(3.6e6, 1000, requests=600), account(1.8e6, 500, requests=400)]
    (footprint,) = per_thousand_inferences(accounts, carbon_intensity_g_per_kwh=50.0)

    assert footprint.windows == 2
    assert footprint.predictions == 1500
    assert footprint.requests == 1000
    assert footprint.energy_kwh == pytest.approx(1.5)
    assert footprint.kwh_per_1000 == pytest.approx(1.0)
    assert footprint.emissions_g_co2e == pytest.approx(75.0)
    assert footprint.g_co2e_per_1000 == pytest.approx(50.0)
    assert footprint.methods == ("nvml",)
    assert footprint.carbon_intensity_g_per_kwh == 50.0


def test_each_version_and_device_has_its_own_figure_in_a_stable_order() -> None:
    accounts = [
        account(7.2e3, 100, version=4),
        account(3.6e3, 100, version=3, device="cpu", method="rapl"),
        account(3.6e3, 200, version=3),
        account(3.6e3, 200, version=3),
    ]
    footprints = per_thousand_inferences(accounts, carbon_intensity_g_per_kwh=400.0)

    assert [(f.model_version, f.compute_device) for f in footprints] == [
        (3, "cpu"),
        (3, GPU),
        (4, GPU),
    ]
    by_key = {(f.model_version, f.compute_device): f for f in footprints}
    # 7.2 kJ = 2 Wh over 400 predictions: 5 Wh and 2 g per 1,000 at 400 g/kWh.
    assert by_key[(3, GPU)].kwh_per_1000 == pytest.approx(0.005)
    assert by_key[(3, GPU)].g_co2e_per_1000 == pytest.approx(2.0)
    assert by_key[(3, "cpu")].kwh_per_1000 == pytest.approx(0.01)
    assert by_key[(3, "cpu")].methods == ("rapl",)
    assert by_key[(4, GPU)].kwh_per_1000 == pytest.approx(0.02)


def test_mixed_methods_are_listed_with_their_share() -> None:
    accounts = [
        account(3.6e6, 1000, device="cpu", method="rapl"),
        account(1.8e6, 1000, device="cpu", method="codecarbon-estimate"),
        account(1.8e6, 1000, device="cpu", method="rapl"),
    ]
    (footprint,) = per_thousand_inferences(accounts, carbon_intensity_g_per_kwh=100.0)

    assert footprint.methods == ("codecarbon-estimate", "rapl")
    assert footprint.energy_kwh_by_method == pytest.approx(
        {"codecarbon-estimate": 0.5, "rapl": 1.5}
    )
    assert footprint.kwh_per_1000 == pytest.approx(2.0 / 3)
    document = footprint.to_dict()
    assert document["methods"] == ["codecarbon-estimate", "rapl"]
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_idle_windows_count_their_energy_and_alone_give_no_rate() -> None:
    busy = per_thousand_inferences([account(3.6e3, 0), account(3.6e3, 1000)], 100.0)
    idle = per_thousand_inferences([account(3.6e3, 0, version=9)], 100.0)

    assert busy[0].kwh_per_1000 == pytest.approx(0.002)
    assert idle[0].predictions == 0
    assert idle[0].energy_kwh == pytest.approx(0.001)
    assert idle[0].kwh_per_1000 is None
    assert idle[0].g_co2e_per_1000 is None
    assert json.loads(json.dumps(idle[0].to_dict()))["kwh_per_1000"] is None
    assert per_thousand_inferences([], 100.0) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (account(-1.0, 10), "energy must be finite"),
        (account(float("nan"), 10), "energy must be finite"),
        (account(1.0, -1), "negative counts"),
        (account(1.0, 10, method=" "), "without a method"),
    ],
)
def test_refuses_an_unreadable_account(bad: InferenceAccount, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        per_thousand_inferences([account(1.0, 10), bad], 100.0)


def test_refuses_an_impossible_intensity() -> None:
    with pytest.raises(ValueError, match="carbon intensity"):
        per_thousand_inferences([account(1.0, 10)], -5.0)
    with pytest.raises(ValueError, match="carbon intensity"):
        per_training_run("planes", 3, 1.0, 0.1, site_carbon_intensity_g_per_kwh=float("inf"))


def test_a_training_run_in_the_same_units() -> None:
    # CodeCarbon's French grid: 2.5 kWh and 0.14 kg, i.e. 56 g/kWh.
    run = per_training_run(
        "planes",
        3,
        energy_kwh=2.5,
        emissions_kg_co2e=0.14,
        method="GPU measured by NVML; CPU estimated from load × TDP",
        site_carbon_intensity_g_per_kwh=400.0,
    )

    assert run.energy_kwh == 2.5
    assert run.emissions_g_co2e == pytest.approx(140.0)
    assert run.carbon_intensity_g_per_kwh == pytest.approx(56.0)
    assert run.emissions_g_co2e_at_site == pytest.approx(1000.0)
    assert run.method.startswith("GPU measured")
    document = run.to_dict()
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_a_training_run_without_energy_or_a_site_figure() -> None:
    run = per_training_run("planes", 1, energy_kwh=0.0, emissions_kg_co2e=0.0)

    assert run.carbon_intensity_g_per_kwh is None
    assert run.emissions_g_co2e_at_site is None
    assert run.method == "codecarbon"
    with pytest.raises(ValueError, match="emissions_kg_co2e"):
        per_training_run("planes", 1, energy_kwh=1.0, emissions_kg_co2e=-0.1)
