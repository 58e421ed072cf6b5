"""`fetalmlops monitor report`: the monitor's summary in the terminal, read from its rows."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from fetalmlops.common.db import create_engine_for, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.monitor import reports
from fetalmlops.monitor.settings import SERVICE_NAME, MonitorSettings

app = typer.Typer(no_args_is_help=True)


@app.callback()
def monitor() -> None:
    """Drift, performance, alarms and carbon, as the monitor measured them."""


@app.command()
def report(
    since: Annotated[
        datetime | None, typer.Option(help="Only drift windows ending at or after this time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole report as JSON.")] = False,
) -> None:
    """What the monitor knows: versions, drift per stream, alarms, performance, carbon."""
    settings, own = Settings(service_name=SERVICE_NAME), MonitorSettings()
    with session_scope(create_engine_for(settings.database_url)) as session:
        summary = reports.summary(session, own.carbon_intensity_g_per_kwh)
        if since is not None:
            summary["drift"] = reports.drift(session, since)
    typer.echo(json.dumps(summary, indent=2) if as_json else text(summary))


def text(summary: dict[str, Any]) -> str:
    lines = []
    for version in summary["versions"]:
        watched = "drift alarm calibrated" if version["watched_for_drift"] else "no drift reference"
        lines.append(f"{version['model']} v{version['model_version']}: {watched}")
    for stream in summary["drift"]:
        last = stream["windows"][-1]
        state = "ALARM" if last["alarm"] else "ok"
        threshold = stream["threshold"] or float("nan")
        lines.append(
            f"  {stream['segment']}: {len(stream['windows'])} windows, last p="
            f"{last['p_value']:.3g}, cusum {last['cusum']:.2f}/{threshold:.2f} {state}"
        )
    for alarm in summary["alarms"]:
        asked = "requested" if alarm["automatic"] else "recommended"
        lines.append(
            f"alarm: {alarm['model']} v{alarm['model_version']} {alarm['segment']} episode "
            f"{alarm['episode']} ({alarm['reason'].get('test', '')}): retraining {asked}"
        )
    for found in summary["performance"]:
        f1, estimate = found["measured"]["macro_f1"], found["estimated"]["macro_f1"]
        lines.append(
            f"{found['model']} v{found['model_version']}: macro-F1 {f1['value']:.3f} "
            f"[{f1['low']:.3f}, {f1['high']:.3f}] on {found['feedback']} feedback, "
            f"estimated {estimate['value']:.3f}"
        )
    for run in summary["carbon"]["training_runs"]:
        lines.append(
            f"training {run['model_name']} v{run['model_version']}: {run['energy_kwh']:.4f} kWh, "
            f"{run['emissions_g_co2e']:.1f} g CO2e ({run['method']})"
        )
    lines.append(f"per 1,000 inferences: {summary['carbon']['per_1000_inferences_status']}")
    return "\n".join(lines)
