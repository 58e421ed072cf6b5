import pytest
from pydantic import ValidationError

from fetalmlops.common.settings import Backend, Settings


def test_defaults_select_the_embedded_stand_ins() -> None:
    settings = Settings()
    assert settings.bus is Backend.EMBEDDED
    assert settings.database_url.startswith("sqlite:///")
    assert settings.topics.all()[0] == "fetal.studies.incoming" and len(settings.topics.all()) == 13
    assert settings.buckets.all() == [
        "fetal-raw",
        "fetal-anonymized",
        "fetal-datasets",
        "fetal-models",
    ]


def test_environment_overrides_with_one_prefix_and_nested_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FETALMLOPS_BUS", "kafka")
    monkeypatch.setenv("FETALMLOPS_TOPICS__IMAGES_RECEIVED", "site-a.images.received")
    monkeypatch.setenv("FETALMLOPS_MINIO_SECRET_KEY", "s3cr3t")
    settings = Settings()
    assert settings.bus is Backend.KAFKA
    assert settings.topics.images_received == "site-a.images.received"
    assert settings.topics.labels == "fetal.labels"
    assert "s3cr3t" not in repr(settings), "secrets never show in a repr or a log line"


def test_nonsense_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALMLOPS_BUS_MAX_ATTEMPTS", "0")
    with pytest.raises(ValidationError, match="bus_max_attempts"):
        Settings()
