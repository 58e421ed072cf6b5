"""The trainer's own settings (``FETALMLOPS_TRAINER_*``) and its dispatcher's
(``FETALMLOPS_DISPATCHER_*``)."""

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
    run_requests: bool = Field(
        True,
        description="Train each `fetal.training.requested` in this service's own consumer. "
        "`false` on Kubernetes, where the dispatcher (`fetalmlops run dispatcher`) makes each "
        "request a Job instead.",
    )
    tokens: dict[str, list[str]] = Field(
        {},
        repr=False,
        description='Bearer tokens and their scopes (JSON), e.g. `{"s3cret": ["training:write"]}`. '
        "With none, `POST /v1/training-requests` answers on a loopback address only.",
    )

    def gate(self) -> Gate:
        return Gate(self.min_improvement, self.min_macro_f1, self.min_class_recall)


DISPATCHER_NAME = "dispatcher"


class DispatcherSettings(BaseSettings):
    """Where and how the dispatcher makes each training request a Kubernetes Job."""

    model_config = SettingsConfigDict(
        env_prefix="FETALMLOPS_DISPATCHER_", extra="ignore", frozen=True
    )

    job_template: Path = Field(
        Path("/etc/fetalmlops/job-template.yaml"),
        description="The Job a request becomes (YAML, a `batch/v1` Job; the chart renders it "
        "into a ConfigMap): its container `trainer`, or its only one, gets the request.",
    )
    namespace: str | None = Field(
        None,
        description="Where the Jobs are created. Unset: the kubeconfig context's namespace, else "
        "the pod's service account's.",
    )
    kubeconfig: Path | None = Field(
        None,
        description="A kubeconfig file, to run outside a cluster. Unset: the pod's service "
        "account token and CA, and the API at KUBERNETES_SERVICE_HOST:PORT.",
    )
    context: str | None = Field(
        None, description="The kubeconfig's context to use. Unset: its current-context."
    )
    api_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest wait for one Kubernetes API call; a timeout is retried like a 5xx.",
    )
