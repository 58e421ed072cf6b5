"""Energy and CO2e of a block of work (a training run, a window of serving), measured offline
by CodeCarbon: the model card's figures and the inference service's energy accounts.

`tracked` wraps a run in CodeCarbon's `OfflineEmissionsTracker`: energy is measured (or
estimated) per device at the start, every 15 s and at the end (so a block shorter than a second
is under-counted), and converted to emissions with the country's carbon intensity from
CodeCarbon's own energy-mix table (g CO2e/kWh, e.g. 56 for France and 662 for Poland in 3.3.2).
What the tracker does, read from codecarbon 3.3.2 and seen on a CPU VM and an H100 machine:

* CPU: RAPL energy counters where ``/sys/class/powercap/intel-rapl`` is readable. Otherwise
  (containers, VMs, most AMD hosts) an *estimate*: the TDP its table matches to the CPU model,
  scaled by the machine's CPU load (``cpu_load`` mode, ``TDP × (0.1 + 0.9 × load³)``); without
  psutil, a constant half of that TDP (85 W when the model is not in the table).
* RAM: always an estimate from the installed memory (CodeCarbon's RAM model, e.g. 20 W).
* GPU: NVIDIA's NVML (AMD's SMI) energy counters, i.e. measured.

`Footprint.method` says which of these applied, so a reader can tell a measurement from an
estimate. The whole machine is counted (CodeCarbon's default ``machine`` mode): on a node shared
with other pods the figure is an upper bound for this run.

The tracker is configured entirely here, never from a ``.codecarbon.config`` or ``CODECARBON_*``
variables, so that a stray file cannot turn on its API output, an Electricity Maps call or a
CSV in the working directory: no output method, no network, its scratch files in a temporary
directory, no lock file and no SIGINT/SIGTERM handlers (``allow_multiple_runs``), and only
errors logged. Measuring must never break a run: if CodeCarbon fails (it logs and swallows its
own exceptions), the run goes on and `Meter.footprint` stays ``None``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

from codecarbon import OfflineEmissionsTracker
from codecarbon.external.scheduler import PeriodicScheduler
from codecarbon.input import DataSource

log = logging.getLogger(__name__)

MEASURE_POWER_SECS = 15.0
CODECARBON_VERSION = version("codecarbon")
# How CodeCarbon obtained the CPU's power, by the mode its resource tracker chose.
CPU_METHODS: Mapping[str, str] = {
    "intel_rapl": "measured by RAPL energy counters",
    "windows_emi": "measured by the Windows Energy Meter Interface",
    "intel_power_gadget": "measured by Intel Power Gadget",
    "cpu_load": "estimated from CPU load × TDP (no RAPL energy counters readable)",
    "constant": "estimated as half the TDP (no energy counters, no load reading)",
}


@dataclass(frozen=True)
class Footprint:
    energy_kwh: float
    emissions_kg_co2e: float
    duration_s: float
    country_iso_code: str
    method: str  # per device, measured or estimated, and how, with the mean power
    source: str = ""  # the same without the figures: one text for every window of a machine

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Meter:
    """Filled when the `tracked` block ends, whether it returned or raised."""

    footprint: Footprint | None = None


def carbon_intensity_g_per_kwh(country_iso_code: str) -> float:
    """The intensity CodeCarbon applies to a country's electricity; ValueError if unknown.

    Unknown codes are refused rather than left to CodeCarbon, which would quietly use the
    world average.
    """
    mix = DataSource().get_global_energy_mix_data()  # type: ignore[no-untyped-call]
    country = mix.get(country_iso_code.upper())
    if country is None:
        raise ValueError(
            f"{country_iso_code!r} is not an ISO 3166-1 alpha-3 code in CodeCarbon's energy mix "
            f"table (e.g. FRA, DEU, GBR, USA)"
        )
    return float(country["carbon_intensity"])


@contextmanager
def tracked(country_iso_code: str, project: str = "fetalmlops-trainer") -> Iterator[Meter]:
    """Measures the energy and emissions of the block, as if run in ``country_iso_code``.

    On exit, also when the block raises (the energy was spent all the same), the tracker is
    stopped, its timer threads are joined and `Meter.footprint` is set; the block's exception
    then propagates.
    """
    country = country_iso_code.upper()
    carbon_intensity_g_per_kwh(country)
    # The tracker applies log_level only after logging its first INFO and WARNING lines.
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    meter = Meter()
    with tempfile.TemporaryDirectory(prefix="codecarbon-") as scratch:
        tracker = OfflineEmissionsTracker(
            country_iso_code=country,
            region=None,
            cloud_provider=None,
            cloud_region=None,
            country_2letter_iso_code=None,
            project_name=project,
            measure_power_secs=MEASURE_POWER_SECS,
            output_dir=scratch,
            output_methods=[],
            output_handlers=[],
            emissions_endpoint=None,
            # Empty, not None: None lets a deprecated CODECARBON_CO2_SIGNAL_API_TOKEN back in,
            # and any token sends the energy to the Electricity Maps API.
            electricitymaps_api_token="",
            force_carbon_intensity_g_co2e_kwh=None,
            allow_multiple_runs=True,
            tracking_mode="machine",
            gpu_ids=None,  # None: every GPU CUDA_VISIBLE_DEVICES shows
            force_cpu_power=None,
            force_ram_power=None,
            force_mode_cpu_load=False,
            rapl_include_dram=False,
            rapl_prefer_psys=False,
            pue=1.0,
            wue=0.0,
            log_level="error",
        )
        tracker.start()
        # Held before `stop`, which drops them: their timers are joined below.
        schedulers = [
            getattr(tracker, "_scheduler", None),
            getattr(tracker, "_scheduler_monitor_power", None),
        ]
        try:
            yield meter
        finally:
            tracker.stop()
            for scheduler in schedulers:
                if scheduler is not None:
                    _join(scheduler)
            meter.footprint = _footprint(tracker, country)
            if meter.footprint is None:
                log.warning("CodeCarbon measured nothing; the run's footprint is unknown")


def _join(scheduler: PeriodicScheduler) -> None:
    """Waits until no timer of ``scheduler`` is alive.

    `PeriodicScheduler.stop` only cancels the pending `threading.Timer`, which exits a moment
    later; and a timer firing while `stop` runs re-arms a new one after it, so cancel and join
    until the timer joined is still the current one.
    """
    while True:
        timer = scheduler._timer
        if timer is None:
            return
        scheduler._stopped = True
        timer.cancel()
        timer.join()
        if scheduler._timer is timer:
            return


def _footprint(tracker: OfflineEmissionsTracker, country: str) -> Footprint | None:
    data = getattr(tracker, "final_emissions_data", None)
    if data is None:
        return None
    return Footprint(
        energy_kwh=float(data.energy_consumed),
        emissions_kg_co2e=float(data.emissions),
        duration_s=float(data.duration),
        country_iso_code=str(data.country_iso_code or country),
        method=_method(tracker, data),
        source=_method(tracker, data, figures=False),
    )


def _method(tracker: OfflineEmissionsTracker, data: Any, figures: bool = True) -> str:
    """Per device, in CodeCarbon's figures, how its power was obtained; without ``figures``,
    only how (the same text for every window of one machine)."""

    def mean(watts: float) -> str:
        return f", mean {watts:.1f} W" if figures else ""

    parts = []
    # `_hardware` is the only place CodeCarbon keeps the CPU mode it chose (pinned to 3.3.2).
    for device in getattr(tracker, "_hardware", []):
        kind = type(device).__name__
        if kind == "CPU":
            mode = getattr(device, "_mode", "unknown")
            how = CPU_METHODS.get(mode, f"CodeCarbon mode {mode}")
            tdp = getattr(device, "_tdp", None)
            tdp_note = f", TDP {tdp} W" if mode in ("cpu_load", "constant") and tdp else ""
            parts.append(f"CPU {how}: {data.cpu_model}{tdp_note}{mean(data.cpu_power)}")
        elif kind == "GPU":
            parts.append(
                f"GPU measured by its driver's energy counters: {data.gpu_model}"
                f"{mean(data.gpu_power)}"
            )
        elif kind == "RAM":
            parts.append(f"RAM estimated from installed memory{mean(data.ram_power)}")
        else:
            parts.append(device.description())
    devices = "; ".join(parts) if parts else "no device detected"
    return f"{devices}; whole machine, CodeCarbon {CODECARBON_VERSION} offline"
