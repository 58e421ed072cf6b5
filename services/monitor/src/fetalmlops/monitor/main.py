"""The monitor service's shell: settings → clients → HTTP app (and, later, its consumers)."""

from __future__ import annotations

from fetalmlops.common.clients import connect
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings

SERVICE_NAME = "monitor"


def build(settings: Settings) -> Service:
    clients = connect(settings)
    app = create_app("FetalMLOps monitor", clients.readiness([settings.buckets.models]))
    return Service(settings, app, bus=clients.bus)


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
