from pathlib import Path

from fastapi.testclient import TestClient

from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.monitor.main import build


def test_monitor_is_live_ready_and_exposes_metrics(tmp_path: Path) -> None:
    settings = Settings(
        store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db.sqlite"
    )
    client = TestClient(build(settings).app)

    assert client.get("/healthz").json() == {"status": "ok"}
    unready = client.get("/readyz")
    assert unready.status_code == 503
    assert "missing buckets" in unready.json()["failures"]["object-store"]

    open_store(settings).ensure_buckets(settings.buckets.all())
    assert client.get("/readyz").status_code == 200
    assert "python_info" in client.get("/metrics").text
