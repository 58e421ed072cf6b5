"""The inference service's shell: settings → clients → HTTP app (and, later, its consumers)."""

from __future__ import annotations

from fetalmlops.common.service import Service, buckets_ready, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store

SERVICE_NAME = "inference"


def build(settings: Settings) -> Service:
    store = open_store(settings)
    readiness = {
        "object-store": buckets_ready(store, [settings.buckets.models]),
    }
    app = create_app("FetalMLOps inference", readiness)
    return Service(settings, app)


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
