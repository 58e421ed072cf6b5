"""The anonymizer's own settings (``FETALMLOPS_ANONYMIZER_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fetalmlops.anonymizer.ocr import require_tesseract
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

    ocr: bool = Field(
        False,
        description="For images with neither a region nor a mask, blank the text Tesseract "
        "reads (needs `tesseract-ocr`); otherwise they are quarantined.",
    )
    ocr_min_confidence: float = Field(
        60.0, ge=0, le=100, description="Least Tesseract confidence (0–100) of a word to blank."
    )
    safe_private: list[tuple[str, int]] = Field(
        [],
        description="Private elements to keep (PS3.15 Retain Safe Private Option) as [creator, "
        'element byte] pairs (JSON), e.g. `[["ACME US 2.0", 5]]`; all other private elements go.',
    )

    def policy(self) -> Policy:
        if self.secret is None or not self.secret.get_secret_value():
            raise ValueError("FETALMLOPS_ANONYMIZER_SECRET is not set: pseudonyms need a secret")
        if self.ocr:
            require_tesseract()
        return Policy(
            secret=self.secret.get_secret_value().encode(),
            retain_modified_dates=self.retain_modified_dates,
            retain_device_identity=self.retain_device_identity,
            masks=self.masks,
            safe_private=frozenset(self.safe_private),
            ocr=self.ocr,
            ocr_min_confidence=self.ocr_min_confidence,
        )
