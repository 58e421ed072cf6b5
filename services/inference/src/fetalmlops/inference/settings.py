"""The inference service's own settings (``FETALMLOPS_INFERENCE_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
        "or `s3://fetal-models/<model>/v<N>/`. Unset: the service runs unready until the first "
        "promoted version of `model_name` (with `reload_on_promotion`), then serves it; without "
        "`model_name`, it serves no model.",
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
    tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens a request may present (`Authorization: Bearer <token>`), as a "
        'JSON list (`["t1","t2"]`). With none here nor in `tokens_file`, the server answers on '
        "loopback only.",
    )
    tokens_file: Path | None = Field(
        None,
        description="A file of bearer tokens, one per line (a mounted Kubernetes Secret); read "
        "at start, added to `tokens`.",
    )
    max_request_bytes: int = Field(
        32 * 1024**2, ge=1024, description="Largest request body accepted (HTTP 413 beyond)."
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Most pixels in one image, all frames together, read from its header before "
        "decoding (HTTP 413 beyond); ingest's limit.",
    )
    max_side: int = Field(
        8192, ge=1, description="Most rows or columns of one image (HTTP 413 beyond); ingest's."
    )
    max_frames: int = Field(
        1000, ge=1, description="Most frames in a multi-frame DICOM (HTTP 413 beyond); ingest's."
    )
    max_request_images: int = Field(
        64,
        ge=1,
        description="Most images in one request (HTTP 413 beyond): each becomes a preprocessed "
        "tensor, however small it was sent.",
    )
    max_bytes_in_flight: int = Field(
        64 * 1024**2,
        ge=1024,
        description="Request bytes the server holds at once, all requests together; a request "
        "waits for room (a chunked one counts as `max_request_bytes`).",
    )
    admission_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for room under `max_bytes_in_flight` (HTTP 503, Retry-After, "
        "beyond).",
    )
    max_concurrent_decodes: int = Field(
        2,
        ge=1,
        description="Requests whose images are decoded at once: each decode holds a full-size "
        "picture (up to `max_pixels`) and its copies.",
    )
    energy_window_s: float = Field(
        60.0,
        ge=0,
        description="Energy is accounted per window of this many seconds and sent to "
        "`fetal.inference.energy` for the monitor's carbon per 1,000 inferences; 0 turns it off.",
    )
    country_iso_code: str = Field(
        "FRA",
        description="Where the service runs (ISO 3166-1 alpha-3), for CodeCarbon's meter; the "
        "monitor applies the site's own grid intensity to the energy.",
    )
    max_batch_size: int = Field(
        16, ge=1, description="Most images one model run takes when requests are micro-batched."
    )
    max_batch_delay_ms: float = Field(
        2.0,
        ge=0,
        description="How long a request waits for others to share its model run (0: no batching).",
    )
    parallel_runs: int = Field(
        1,
        ge=1,
        description="Micro-batches the model runs at once. On a CPU, as many as cores with "
        "`OMP_NUM_THREADS=1` keeps every core busy (as TorchServe's worker per core); on a GPU, 1.",
    )
    explain_timeout_s: float = Field(
        20.0, gt=0, description="Time budget of one `:explain` request (SHAP samples fewer to fit)."
    )
    reload_on_promotion: bool = Field(
        True,
        description="Follow `fetal.models.promoted`: load each new production version of the "
        "served model and switch to it without dropping a request.",
    )
    follow_rollouts: bool = Field(
        True,
        description="Follow `fetal.models.rollout`: serve the champion and challenger it names, "
        "the challenger in shadow (scores every request, answers none) or canary (answers a "
        "fraction of requests, chosen by request id).",
    )
    max_shadows_in_flight: int = Field(
        16,
        ge=1,
        description="Shadow scorings by the challenger running at once; beyond, a request's "
        "shadow is skipped and counted, never queued (each holds its request's images).",
    )
