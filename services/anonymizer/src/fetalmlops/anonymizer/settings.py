"""The anonymizer's own settings (``FETALMLOPS_ANONYMIZER_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fetalmlops.anonymizer.profile.policy import Policy


class AnonymizerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FETALMLOPS_ANONYMIZER_", extra="ignore", frozen=True
    )

    secret: SecretStr | None = Field(
        None,
        description="HMAC key of every pseudonym (a Kubernetes Secret in the cluster). Required.",
    )
    retain_device_identity: bool = Field(
        False, description="Keep device serial and station name (PS3.15 option 113109)."
    )
    retain_modified_dates: bool = Field(
        True, description="Shift dates by one amount per patient, keep times (option 113107)."
    )

    pictures_deidentified: bool = Field(
        False,
        description="Accept PNG/JPEG whose pixels were de-identified at the source (public "
        "datasets); otherwise they are quarantined, having no imaging region to keep.",
    )
    canonical_size: int = Field(256, ge=32, description="Side of the canonical model-ready image.")
    masks: dict[str, list[tuple[int, int, int, int]]] = Field(
        {},
        description="Regions to keep in images that name none, by device or frame size (JSON), "
        'e.g. `{"Acme/Echo 5": [[40, 60, 980, 740]], "800x600": [[80, 80, 720, 590]]}`.',
    )

    def policy(self) -> Policy:
        if self.secret is None or not self.secret.get_secret_value():
            raise ValueError("FETALMLOPS_ANONYMIZER_SECRET is not set: pseudonyms need a secret")
        return Policy(
            secret=self.secret.get_secret_value().encode(),
            retain_modified_dates=self.retain_modified_dates,
            retain_device_identity=self.retain_device_identity,
            masks=self.masks,
        )
