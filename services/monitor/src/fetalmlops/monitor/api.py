"""The report API, the dashboard and rollout approvals, behind scoped bearer tokens.

JSON under ``/v1/reports`` (the whole summary, or drift, performance, alarms and carbon alone),
the rollouts under ``/v1/rollouts`` and the HTML dashboard at ``/dashboard``, all read from the
monitor's own rows with the ``reports:read`` scope. A named person approves a challenger with
``POST /v1/models/{model}/versions/{version}/approvals`` and the ``models:approve`` scope (what
`fetalmlops model approve` sends); every refusal is logged, and one from a known token or a
name the plan does not list is written to the audit trail too. Without tokens configured the
routes are open, and the service then listens on loopback only (`main.build`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from fetalmlops.common.bearer import Tokens
from fetalmlops.common.bearer_route import require
from fetalmlops.common.db import session_scope
from fetalmlops.common.db.audit import append
from fetalmlops.monitor import dashboard, reports, rollouts
from fetalmlops.monitor.rollouts import ApprovalRefused, Rollouts
from fetalmlops.monitor.settings import SERVICE_NAME, MonitorSettings

log = logging.getLogger(__name__)
REPORTS_READ = "reports:read"
MODELS_APPROVE = "models:approve"


class ApprovalBody(BaseModel):
    by: str = Field(
        min_length=1, max_length=128, description="Who approves, as the plan names them."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept in the audit trail).")


def add_routes(
    app: FastAPI, engine: Engine, own: MonitorSettings, release: Rollouts | None = None
) -> None:
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

    @app.get("/v1/rollouts", dependencies=guarded, tags=["rollouts"])
    def rollout_list(model: str | None = None) -> list[dict[str, Any]]:
        """Every challenger's rollout: phase, reason, approvals and the arms compared."""
        with session_scope(engine) as session:
            return rollouts.listing(session, model)

    @app.post("/v1/models/{model}/versions/{version}/approvals", tags=["rollouts"])
    def approve(model: str, version: int, body: ApprovalBody, request: Request) -> dict[str, Any]:
        """A named person approves the challenger's promotion (the plan's `approval`)."""
        refused = (
            tokens.refusal(request.headers.get("authorization"), MODELS_APPROVE) if tokens else None
        )
        try:
            if refused is not None:
                raise ApprovalRefused(refused.status, refused.reason)
            if release is None:
                raise ApprovalRefused(409, "the monitor runs no change-control plan")
            return release.approve(model, version, body.by, body.reason)
        except ApprovalRefused as exc:
            log.warning(
                "approval refused",
                extra={"model": model, "model_version": version, "status": exc.status,
                       "reason": exc.reason},
            )  # fmt: skip
            if exc.status != 401:  # a known token, or a name the plan does not list
                with session_scope(engine) as session:
                    append(session, SERVICE_NAME, "approval refused", f"model:{model}:v{version}",
                           {"by": body.by, "status": exc.status, "reason": exc.reason})  # fmt: skip
            headers = {"WWW-Authenticate": refused.challenge} if refused is not None else None
            raise HTTPException(exc.status, exc.reason, headers) from None

    @app.get("/dashboard", dependencies=guarded, response_class=HTMLResponse, tags=["reports"])
    def page() -> str:
        with session_scope(engine) as session:
            return dashboard.page(reports.summary(session, intensity))
