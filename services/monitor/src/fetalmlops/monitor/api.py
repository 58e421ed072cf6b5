"""The report API and the dashboard, behind the ``reports:read`` scope.

JSON under ``/v1/reports`` (the whole summary, or drift, performance, alarms and carbon alone)
and the HTML dashboard at ``/dashboard``, all read from the monitor's own rows. Without tokens
configured they are open, and the service then listens on loopback only (`main.build`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from fetalmlops.common.bearer import Tokens
from fetalmlops.common.bearer_route import require
from fetalmlops.common.db import session_scope
from fetalmlops.monitor import dashboard, reports
from fetalmlops.monitor.settings import MonitorSettings

REPORTS_READ = "reports:read"


def add_routes(app: FastAPI, engine: Engine, own: MonitorSettings) -> None:
    tokens = Tokens(own.tokens)
    guarded = [Depends(require(REPORTS_READ, tokens))] if tokens else []
    intensity = own.carbon_intensity_g_per_kwh

    @app.get("/v1/reports", dependencies=guarded, tags=["reports"])
    def summary() -> dict[str, Any]:
        """Versions watched, drift per stream, alarms, performance per version, carbon."""
        with session_scope(engine) as session:
            return reports.summary(session, intensity)

    @app.get("/v1/reports/drift", dependencies=guarded, tags=["reports"])
    def drift(since: datetime | None = None) -> list[dict[str, Any]]:
        """Each stream's windows (those ending at or after ``since``, ISO 8601, when given)."""
        with session_scope(engine) as session:
            return reports.drift(session, since)

    @app.get("/v1/reports/performance/{model}/{version}", dependencies=guarded, tags=["reports"])
    def performance(model: str, version: int) -> dict[str, Any]:
        """Measured from feedback, estimated on the same predictions, and the gap."""
        with session_scope(engine) as session:
            found = reports.performance(session, model, version)
        if found is None:
            raise HTTPException(404, "no feedback for this model version")
        return found

    @app.get("/v1/reports/alarms", dependencies=guarded, tags=["reports"])
    def alarms() -> list[dict[str, Any]]:
        with session_scope(engine) as session:
            return reports.alarms(session)

    @app.get("/v1/reports/carbon", dependencies=guarded, tags=["reports"])
    def carbon() -> dict[str, Any]:
        with session_scope(engine) as session:
            return reports.carbon(session, intensity)

    @app.get("/dashboard", dependencies=guarded, response_class=HTMLResponse, tags=["reports"])
    def page() -> str:
        with session_scope(engine) as session:
            return dashboard.page(reports.summary(session, intensity))
