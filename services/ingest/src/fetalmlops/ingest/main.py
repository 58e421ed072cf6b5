"""The ingest service's shell: settings → clients → intake → HTTP app, SCP and Kafka consumer."""

from __future__ import annotations

import logging

from fetalmlops.common.bus import Consumer, open_bus, retry_policy
from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.service import (
    Server,
    Service,
    buckets_ready,
    create_app,
    database_ready,
    run,
)
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store
from fetalmlops.ingest import studies
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.scp import StoreSCP
from fetalmlops.ingest.settings import IngestSettings

SERVICE_NAME = "ingest"


def build(settings: Settings, limits: IngestSettings | None = None) -> Service:
    limits = limits or IngestSettings()
    store = open_store(settings)
    engine = create_engine_for(settings.database_url)
    bus = open_bus(settings)
    intake = Intake(settings, limits, store, bus, engine)
    readiness = {
        "object-store": buckets_ready(store, [settings.buckets.raw]),
        "database": database_ready(engine),
    }
    app = create_app("FetalMLOps ingest", readiness)
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
    return Service(settings, app, bus=bus, consumers=[consumer], servers=servers)


def main() -> None:
    # pydicom logs the offending value of malformed elements; from a PACS that may be PHI.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    run(build(Settings(service_name=SERVICE_NAME)))
