"""The monitor service's shell: settings → clients → HTTP app (and, later, its consumers)."""

from __future__ import annotations

from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.service import Service, buckets_ready, create_app, database_ready, run
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store

SERVICE_NAME = "monitor"


def build(settings: Settings) -> Service:
    store = open_store(settings)
    readiness = {
        "object-store": buckets_ready(store, [settings.buckets.models]),
        "database": database_ready(create_engine_for(settings.database_url)),
    }
    app = create_app("FetalMLOps monitor", readiness)
    return Service(settings, app)


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
