"""The inference service's own settings (``FETALMLOPS_INFERENCE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAME = "inference"


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FETALMLOPS_INFERENCE_", extra="ignore", frozen=True
    )

    model_uri: str | None = Field(
        None,
        description="The model version to serve: a directory in KServe's layout "
        "(`/mnt/models`: `model-store/<model>.mar`, `config/config.properties`), a `.mar` file, "
        "or `s3://fetal-models/<model>/v<N>/`. Unset: the service runs unready, serving no model.",
    )
    model_name: str | None = Field(
        None, description="Name on the endpoint paths; default: the archive's own model name."
    )
    cache_dir: Path | None = Field(
        None,
        description="Where versions are downloaded and unpacked; default: a new temporary "
        "directory per start.",
    )
    device: str = Field("cpu", description="Torch device the model runs on (`cpu`, `cuda:0`).")
