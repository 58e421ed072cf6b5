"""The model-version contract: where a version lives and which archive formats are read."""

from __future__ import annotations

import pytest

from fetalmlops.common.model_version import (
    ARCHIVE_FORMAT,
    ArchiveFormatError,
    archive_format,
    format_document,
    mar_path,
    storage_uri,
    version_prefix,
)
from fetalmlops.common.settings import Settings


def test_a_version_lives_in_the_configured_bucket_in_kserves_layout() -> None:
    bucket = Settings(buckets={"models": "site-models"}).buckets.models
    assert storage_uri(bucket, "planes", 12) == "s3://site-models/planes/v12/"
    assert version_prefix("planes", 1) == "planes/v1/"  # never a prefix of v10's
    assert mar_path("planes") == "model-store/planes.mar"


def test_archive_formats_up_to_this_builds_are_read_and_newer_ones_refused() -> None:
    assert archive_format(format_document()) == ARCHIVE_FORMAT
    assert archive_format(None) == 1  # written before archives named their format
    with pytest.raises(ArchiveFormatError, match=r"format 2, newer than .*\(up to 1\)"):
        archive_format('{"format": 2}')
    for unreadable in ("", "[]", '{"format": "two"}', '{"format": 0}', '{"version": 1}'):
        with pytest.raises(ArchiveFormatError, match="does not name a format"):
            archive_format(unreadable)
