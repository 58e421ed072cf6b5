"""What the version costs: compute per image where it is deployed, energy of the run that
trained it."""

from __future__ import annotations

from fetalmlops.carbon.tracking import Footprint
from fetalmlops.trainer.card.markdown import fields, shape
from fetalmlops.trainer.efficiency import Efficiency


def efficiency(efficiency: Efficiency) -> str:
    threads = "thread" if efficiency.threads == 1 else "threads"
    rows = [
        ("Parameters", f"{efficiency.parameters:,}"),
        ("Trainable parameters", f"{efficiency.trainable_parameters:,}"),
        ("Weights size", f"{efficiency.size_mb:.2f} MB"),
        ("CPU latency, median (p50)", f"{efficiency.cpu_latency_ms_p50:.2f} ms"),
        ("CPU latency, p95", f"{efficiency.cpu_latency_ms_p95:.2f} ms"),
    ]
    return "\n".join(
        [
            "## Efficiency",
            "",
            f"One {shape(efficiency.input_shape)} image at a time on CPU, {efficiency.threads} "
            f"{threads}: how a scanner-side or clinic-server deployment runs it.",
            "",
            fields(rows),
        ]
    )


def carbon(footprint: Footprint | None) -> str:
    if footprint is None:
        return "## Carbon\n\nEnergy and emissions of the training run: not measured."
    rows = [
        ("Energy", f"{footprint.energy_kwh:.3g} kWh"),
        ("Emissions", f"{footprint.emissions_kg_co2e:.3g} kg CO2e"),
        ("Grid", f"{footprint.country_iso_code} (CodeCarbon's carbon intensity for the country)"),
        ("Duration", f"{footprint.duration_s:.1f} s"),
        ("How", footprint.method),
    ]
    return "\n".join(
        ["## Carbon", "", "The training run, as CodeCarbon measured it:", "", fields(rows)]
    )
