"""The trainer's own settings (``FETALMLOPS_TRAINER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fetalmlops.trainer.registry import Gate

SERVICE_NAME = "trainer"


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FETALMLOPS_TRAINER_", extra="ignore", frozen=True)

    model_name: str = Field("fetal-planes", description="Registry name of the model trained.")
    country_iso_code: str = Field(
        "USA",
        min_length=3,
        max_length=3,
        description="Where training runs (ISO 3166 alpha-3): CodeCarbon's grid carbon intensity.",
    )
    workdir: Path = Field(
        Path.home() / ".cache" / "fetalmlops" / "trainer",
        description="Checkpoints and packaging (a volume in the cluster, so a Job resumes).",
    )
    min_improvement: float = Field(
        0.0, description="Validation macro-F1 a candidate must gain over production (< 0: a dip)."
    )
    min_macro_f1: float = Field(0.70, description="Validation macro-F1 floor for promotion.")
    min_class_recall: float = Field(0.30, description="Per-class recall floor for promotion.")
    plan: Path | None = Field(
        None,
        description="The model's change-control plan (YAML, see deploy/change-control): the "
        "sequestered test set, the data rules and the champion/challenger gate replace the "
        "promotion floors above. Unset: no plan governs the model.",
    )
    tokens: dict[str, list[str]] = Field(
        {},
        repr=False,
        description='Bearer tokens and their scopes (JSON), e.g. `{"s3cret": ["training:write"]}`. '
        "With none, `POST /v1/training-requests` answers on a loopback address only.",
    )

    def gate(self) -> Gate:
        return Gate(self.min_improvement, self.min_macro_f1, self.min_class_recall)
