"""The monitor's own settings (``FETALMLOPS_MONITOR_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = "monitor"


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FETALMLOPS_MONITOR_", extra="ignore", frozen=True)

    window_size: int = Field(
        50,
        ge=10,
        le=128,
        description="Predictions in a drift window, per model version and scanner segment "
        "(at most half the drift reference's sample, which alarm calibration splits).",
    )
    window_seconds: float = Field(
        3600.0,
        gt=0,
        description="A window also closes, with fewer predictions, at the first prediction "
        "of its segment this many seconds (event time) after the window's first, so a quiet "
        "scanner is tested too.",
    )
    false_alarms_per_10k: float = Field(
        0.5,
        gt=0,
        description="The alarm's budget: false alarm episodes per 10,000 predictions with "
        "nothing changed, to which its threshold is calibrated on each version's reference.",
    )
    calibration_windows: int = Field(
        120, ge=20, description="No-shift windows split off the reference to calibrate the alarm."
    )
    auto_retrain: bool = Field(
        True,
        description="Publish `fetal.training.requested` when an alarm episode starts; false: "
        "record it as a recommendation in the report only.",
    )
    tokens: dict[str, list[str]] = Field(
        {},
        repr=False,
        description='Bearer tokens and their scopes (JSON), e.g. `{"s3cret": ["reports:read"]}`. '
        "With none, the reports and dashboard answer on a loopback address only.",
    )
    carbon_intensity_g_per_kwh: float = Field(
        56.0, ge=0, description="The site grid's carbon intensity (gCO2e/kWh; France's default)."
    )
    plan: Path | None = Field(
        None,
        description="The change-control plan (YAML, `fetalmlops plan validate`) whose rollout "
        "rules move a challenger that passed the trainer's gate through shadow and canary to "
        "production or back; without one, no rollout is run.",
    )
    rollout_review_seconds: float = Field(
        5.0,
        ge=0,
        description="Predictions review the active rollout at most this often (feedback and "
        "approvals always do): each review reads the rollout's predictions again.",
    )
