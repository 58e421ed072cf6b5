"""The ingest service's shell: settings → clients → intake → HTTP app, SCP and Kafka consumer."""

from __future__ import annotations

import logging

from fetalmlops.common.bus import Consumer, retry_policy
from fetalmlops.common.clients import Clients, connect
from fetalmlops.common.service import Server, Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.ingest import studies
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.scp import StoreSCP
from fetalmlops.ingest.settings import IngestSettings

SERVICE_NAME = "ingest"


def build(
    settings: Settings, limits: IngestSettings | None = None, clients: Clients | None = None
) -> Service:
    """The service on ``clients`` (default: those ``settings`` configure)."""
    limits = limits or IngestSettings()
    clients = clients or connect(settings)
    intake = Intake(settings, limits, clients.store, clients.bus, clients.engine)
    app = create_app("FetalMLOps ingest", clients.readiness([settings.buckets.raw]))
    add_routes(app, intake)
    consumer = Consumer(
        [settings.topics.studies_incoming],
        "ingest",
        studies.handler(intake),
        deadletter_topic=settings.topics.deadletter_raw,
        retry=retry_policy(settings),
    )
    servers: list[Server] = (
        [StoreSCP(intake, settings.http_host, limits.scp_port)] if limits.scp_port else []
    )
    return Service(settings, app, bus=clients.bus, consumers=[consumer], servers=servers)


def main() -> None:
    # pydicom logs the offending value of malformed elements; from a PACS that may be PHI.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    run(build(Settings(service_name=SERVICE_NAME)))
