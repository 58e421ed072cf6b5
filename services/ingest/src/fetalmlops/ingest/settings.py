"""Ingest's own settings (``FETALMLOPS_INGEST_*``): limits, DICOM peers and API tokens."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FETALMLOPS_INGEST_", extra="ignore", frozen=True)

    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest accepted object (bytes).")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Most pixels in one image, all frames together."
    )
    max_side: int = Field(8192, ge=1, description="Most rows or columns of one frame.")
    max_frames: int = Field(1000, ge=1, description="Most frames in a multi-frame DICOM.")
    modalities: list[str] = Field(["US"], description="DICOM modalities accepted (JSON list).")
    sop_classes: list[str] = Field(
        [US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE],
        description="DICOM SOP classes accepted (JSON list).",
    )
    inline_max_bytes: int = Field(
        900 * 1024, description="Largest instance carried inline in a Kafka study message."
    )
    scp_port: int = Field(11112, description="DICOM C-STORE SCP port (0: no SCP).")
    scp_ae_title: str = Field("FETALMLOPS", description="The SCP's own AE title.")
    calling_ae_titles: list[str] = Field(
        ["FETAL_PACS"], description="Calling AE titles allowed to associate (JSON list)."
    )
    tokens: dict[str, list[str]] = Field(
        {},
        repr=False,
        description='Bearer tokens and their scopes (JSON), e.g. `{"s3cret": ["images:write"]}`.',
    )
