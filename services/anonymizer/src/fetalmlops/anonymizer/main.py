"""The anonymizer's shell: settings → clients → the images consumer, health and metrics."""

from __future__ import annotations

import logging

from fetalmlops.anonymizer.catalog import Catalog
from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import Consumer, open_bus, retry_policy
from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.service import (
    ReadinessCheck,
    Service,
    buckets_ready,
    create_app,
    database_ready,
    run,
)
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import open_store

SERVICE_NAME = "anonymizer"


def build(settings: Settings, own: AnonymizerSettings | None = None) -> Service:
    own = own or AnonymizerSettings()
    store = open_store(settings)
    engine = create_engine_for(settings.database_url)
    bus = open_bus(settings)
    anonymizer = Anonymizer(settings, own, store, bus, engine)
    readiness = {
        "object-store": buckets_ready(store, [settings.buckets.raw, settings.buckets.anonymized]),
        "database": database_ready(engine),
        "secret": secret_ready(own),
    }
    app = create_app("FetalMLOps anonymizer", readiness)
    consumer = Consumer(
        [settings.topics.images_received],
        "anonymizer",
        anonymizer.handler(),
        deadletter_topic=settings.topics.deadletter,
        retry=retry_policy(settings),
    )
    labels = Consumer(
        [settings.topics.labels],
        "catalog",
        Catalog(own, engine).handle,
        deadletter_topic=settings.topics.deadletter,
        retry=retry_policy(settings),
    )
    return Service(settings, app, bus=bus, consumers=[consumer, labels])


def secret_ready(own: AnonymizerSettings) -> ReadinessCheck:
    def check() -> None:
        own.policy()  # raises, without the secret's value, when it is missing

    return check


def main() -> None:
    # pydicom logs the offending value of malformed elements; from a PACS that may be PHI.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    run(build(Settings(service_name=SERVICE_NAME)))
