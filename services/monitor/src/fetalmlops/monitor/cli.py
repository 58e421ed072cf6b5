"""`fetalmlops monitor report`: the monitor's summary in the terminal, read from its rows;
`fetalmlops model approve` and `fetalmlops model rollouts`: a challenger's rollout, through the
monitor's API (the approval needs a token with the ``models:approve`` scope)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Annotated, Any

import typer

from fetalmlops.common.db import create_engine_for, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.monitor import reports
from fetalmlops.monitor.settings import SERVICE_NAME, MonitorSettings

app = typer.Typer(no_args_is_help=True)
model_app = typer.Typer(
    no_args_is_help=True, help="Model versions in rollout: their state, and approvals."
)
Url = Annotated[
    str,
    typer.Option(envvar="FETALMLOPS_MONITOR_URL", help="The monitor's base URL."),
]
Token = Annotated[
    str | None,
    typer.Option(
        envvar="FETALMLOPS_TOKEN", show_envvar=True, help="Bearer token (models:approve scope)."
    ),
]


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


@model_app.command()
def approve(
    version: Annotated[int, typer.Argument(help="The challenger's version number.")],
    by: Annotated[str, typer.Option("--by", help="Who approves, as the plan names them.")],
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the audit trail.")],
    model: Annotated[str, typer.Option(help="The model's registry name.")] = "fetal-planes",
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Approve a challenger's promotion; the last approval the plan requires promotes it."""
    path = f"/v1/models/{model}/versions/{version}/approvals"
    answer = call(url, path, token, {"by": by, "reason": reason})
    typer.echo(f"{model} v{version}: {answer['phase']} ({answer['reason']})")


@model_app.command("rollouts")
def rollout_list(
    model: Annotated[str | None, typer.Option(help="Only this model's.")] = None,
    url: Url = "http://127.0.0.1:8080",
    token: Token = None,
) -> None:
    """Every challenger's rollout as JSON: phase, reason, approvals, the arms compared."""
    query = f"?model={model}" if model else ""
    typer.echo(json.dumps(call(url, f"/v1/rollouts{query}", token), indent=2))


def call(url: str, path: str, token: str | None, body: dict[str, Any] | None = None) -> Any:
    """The monitor's JSON answer; exits 1 with the API's reason when it refuses."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"not an http(s) URL: {url}", param_hint="--url")
    # The scheme is checked above: urllib would also open file: URLs.
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        typer.echo(f"refused ({exc.code}): {detail}", err=True)
        raise typer.Exit(1) from None
    except urllib.error.URLError as exc:
        typer.echo(f"cannot reach the monitor at {url}: {exc.reason}", err=True)
        raise typer.Exit(1) from None
