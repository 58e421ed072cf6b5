"""Energy and CO2e per 1,000 inferences and per training run, in the same units.

The inference service keeps an account per window: the energy its compute device drew, how many
requests and predictions it served, and how the energy was obtained (``"rapl"``, ``"nvml"``,
``"codecarbon-estimate"``, …). `per_thousand_inferences` adds the windows up per model version
and device and divides by the predictions: an inference is one prediction, one image (a request
of N images is N inferences). The energy is the device's over the window, idle time included,
so the figure falls as the load rises; a window with no predictions still adds its energy.

Emissions are energy × the grid's carbon intensity in g CO2e/kWh, a site setting (the hospital's
supplier's or the country's average figure). A measured and an estimated energy do not mean the
same, so every figure carries its method; when windows of one version and device were obtained
differently, the figure lists every method with the energy it accounts for, rather than
presenting a sum of measurements and guesses as either.

`per_training_run` puts a version's CodeCarbon figures (energy in kWh, emissions in kg CO2e at
CodeCarbon's own intensity for the training country) into the same units, and, given the
site's intensity, re-expresses them at it so that training and serving compare on one grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

JOULES_PER_KWH = 3.6e6
INFERENCES_PER_FIGURE = 1000
GRAMS_PER_KG = 1000.0


@dataclass(frozen=True)
class InferenceAccount:
    """One window of the inference service's energy account for one model version."""

    model_name: str
    model_version: int
    compute_device: str  # as in PredictionMade: "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"
    energy_joules: float
    requests: int
    predictions: int
    method: str  # how energy_joules was obtained: "rapl", "nvml", "codecarbon-estimate", …


@dataclass(frozen=True)
class InferenceFootprint:
    model_name: str
    model_version: int
    compute_device: str
    windows: int
    requests: int
    predictions: int
    energy_kwh: float
    emissions_g_co2e: float
    kwh_per_1000: float | None  # None: no predictions in any window
    g_co2e_per_1000: float | None
    carbon_intensity_g_per_kwh: float
    methods: tuple[str, ...]  # sorted; more than one means the energy mixes methods
    energy_kwh_by_method: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for a report row."""
        result = asdict(self)
        result["methods"] = list(self.methods)
        return result


@dataclass(frozen=True)
class TrainingFootprint:
    model_name: str
    model_version: int
    energy_kwh: float
    emissions_g_co2e: float  # as CodeCarbon reported it, at its intensity for the country
    carbon_intensity_g_per_kwh: float | None  # the intensity CodeCarbon applied; None at 0 kWh
    method: str
    emissions_g_co2e_at_site: float | None  # at the site's intensity, when one was given
    site_carbon_intensity_g_per_kwh: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values for a report row."""
        return asdict(self)


def kwh(joules: float) -> float:
    return joules / JOULES_PER_KWH


def per_thousand_inferences(
    accounts: Iterable[InferenceAccount], carbon_intensity_g_per_kwh: float
) -> list[InferenceFootprint]:
    """One footprint per (model name, model version, compute device), sorted by that key.

    Raises ValueError on a negative or non-finite energy or intensity, negative counts, or an
    account without a method.
    """
    _check_intensity(carbon_intensity_g_per_kwh)
    grouped: dict[tuple[str, int, str], list[InferenceAccount]] = {}
    for account in accounts:
        _check_account(account)
        key = (account.model_name, account.model_version, account.compute_device)
        grouped.setdefault(key, []).append(account)

    footprints = []
    for (name, version, device), windows in sorted(grouped.items()):
        by_method: dict[str, float] = {}
        for window in windows:
            by_method[window.method] = by_method.get(window.method, 0.0) + kwh(window.energy_joules)
        energy = math.fsum(by_method.values())
        predictions = sum(window.predictions for window in windows)
        per_figure = INFERENCES_PER_FIGURE / predictions if predictions else None
        footprints.append(
            InferenceFootprint(
                model_name=name,
                model_version=version,
                compute_device=device,
                windows=len(windows),
                requests=sum(window.requests for window in windows),
                predictions=predictions,
                energy_kwh=energy,
                emissions_g_co2e=energy * carbon_intensity_g_per_kwh,
                kwh_per_1000=None if per_figure is None else energy * per_figure,
                g_co2e_per_1000=(
                    None if per_figure is None else energy * carbon_intensity_g_per_kwh * per_figure
                ),
                carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh,
                methods=tuple(sorted(by_method)),
                energy_kwh_by_method=dict(sorted(by_method.items())),
            )
        )
    return footprints


def per_training_run(
    model_name: str,
    model_version: int,
    energy_kwh: float,
    emissions_kg_co2e: float,
    *,
    method: str = "codecarbon",
    site_carbon_intensity_g_per_kwh: float | None = None,
) -> TrainingFootprint:
    """A version's CodeCarbon figures (as on `ModelVersion`) in kWh and g CO2e.

    ``method`` is what the trainer's `Footprint.method` said, when known. Raises ValueError on
    negative or non-finite figures.
    """
    for label, value in (("energy_kwh", energy_kwh), ("emissions_kg_co2e", emissions_kg_co2e)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{label} must be finite and non-negative, got {value}")
    if site_carbon_intensity_g_per_kwh is not None:
        _check_intensity(site_carbon_intensity_g_per_kwh)
    emissions = emissions_kg_co2e * GRAMS_PER_KG
    return TrainingFootprint(
        model_name=model_name,
        model_version=model_version,
        energy_kwh=energy_kwh,
        emissions_g_co2e=emissions,
        carbon_intensity_g_per_kwh=emissions / energy_kwh if energy_kwh > 0 else None,
        method=method,
        emissions_g_co2e_at_site=(
            None
            if site_carbon_intensity_g_per_kwh is None
            else energy_kwh * site_carbon_intensity_g_per_kwh
        ),
        site_carbon_intensity_g_per_kwh=site_carbon_intensity_g_per_kwh,
    )


def _check_intensity(value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"carbon intensity must be finite and non-negative g/kWh, got {value}")


def _check_account(account: InferenceAccount) -> None:
    where = f"{account.model_name} v{account.model_version} on {account.compute_device}"
    if not (math.isfinite(account.energy_joules) and account.energy_joules >= 0):
        raise ValueError(
            f"{where}: energy must be finite and non-negative, got {account.energy_joules}"
        )
    if account.requests < 0 or account.predictions < 0:
        raise ValueError(f"{where}: negative counts ({account.requests}, {account.predictions})")
    if not account.method.strip():
        raise ValueError(f"{where}: an energy figure without a method cannot be read")
