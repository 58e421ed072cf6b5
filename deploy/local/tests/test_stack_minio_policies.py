"""Least-privilege MinIO policies: the PHI bucket is reachable only by ingest and anonymizer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fetalmlops.common.settings import Buckets
from fetalmlops.stack.config import SERVICES
from fetalmlops.stack.minio import BUCKET_ACCESS, service_policy

BUCKETS = Buckets()


def grants(service: str) -> dict[str, set[str]]:
    """Resource ARN -> allowed actions in the service's policy."""
    out: dict[str, set[str]] = {}
    for statement in service_policy(service, BUCKETS)["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            out.setdefault(resource, set()).update(statement["Action"])
    return out


def buckets_of(service: str) -> set[str]:
    return {arn.removeprefix("arn:aws:s3:::").split("/")[0] for arn in grants(service)}


def can_write(service: str, bucket: str) -> bool:
    return "s3:PutObject" in grants(service).get(f"arn:aws:s3:::{bucket}/*", set())


def test_every_service_has_a_policy() -> None:
    assert set(BUCKET_ACCESS) == set(SERVICES)


def test_raw_bucket_only_in_ingest_and_anonymizer_policies() -> None:
    with_raw = {s for s in SERVICES if BUCKETS.raw in buckets_of(s)}
    assert with_raw == {"ingest", "anonymizer"}


@pytest.mark.parametrize(
    ("service", "readable", "writable"),
    [
        ("ingest", {"fetal-raw"}, {"fetal-raw"}),
        ("anonymizer", {"fetal-raw", "fetal-anonymized"}, {"fetal-raw", "fetal-anonymized"}),
        (
            "trainer",
            {"fetal-anonymized", "fetal-datasets", "fetal-models"},
            {"fetal-datasets", "fetal-models"},
        ),
        ("inference", {"fetal-models"}, set()),
        ("monitor", {"fetal-models", "fetal-datasets"}, set()),
    ],
)
def test_service_reaches_exactly_its_buckets(
    service: str, readable: set[str], writable: set[str]
) -> None:
    assert buckets_of(service) == readable
    assert {b for b in readable if can_write(service, b)} == writable
    for bucket in readable:
        assert "s3:GetObject" in grants(service)[f"arn:aws:s3:::{bucket}/*"]


def test_no_wildcard_actions_or_resources() -> None:
    for service in SERVICES:
        for arn, actions in grants(service).items():
            assert arn not in {"*", "arn:aws:s3:::*"}
            assert not any(a.endswith("*") for a in actions)


def test_bucket_names_come_from_settings() -> None:
    renamed = Buckets(raw="hospital-phi")
    policy: dict[str, Any] = service_policy("ingest", renamed)
    assert "hospital-phi" in json.dumps(policy)
    assert "fetal-raw" not in json.dumps(policy)
