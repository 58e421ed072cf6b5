from pathlib import Path

from fastapi.testclient import TestClient

from fetalmlops.anonymizer.main import build
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store


def test_anonymizer_is_live_ready_and_exposes_metrics(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db.sqlite"
    )
    open_store(settings).ensure_buckets(settings.buckets.all())
    without_secret = TestClient(build(settings, AnonymizerSettings(secret=None)).app)
    unready = without_secret.get("/readyz")
    assert unready.status_code == 503
    assert "FETALMLOPS_ANONYMIZER_SECRET" in unready.json()["failures"]["secret"]

    client = TestClient(build(settings, AnonymizerSettings(secret="s3cret")).app)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert "s3cret" not in client.get("/readyz").text + client.get("/metrics").text
