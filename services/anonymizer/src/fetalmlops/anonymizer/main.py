"""The anonymizer's shell: settings → clients → the images consumer, health and metrics."""

from __future__ import annotations

import logging

from fetalmlops.anonymizer.catalog import Catalog
from fetalmlops.anonymizer.images import Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import Consumer, retry_policy
from fetalmlops.common.clients import Clients, connect
from fetalmlops.common.service import ReadinessCheck, Service, create_app, run
from fetalmlops.common.settings import Settings

SERVICE_NAME = "anonymizer"


def build(
    settings: Settings, own: AnonymizerSettings | None = None, clients: Clients | None = None
) -> Service:
    """The service on ``clients`` (default: those ``settings`` configure)."""
    own = own or AnonymizerSettings()
    clients = clients or connect(settings)
    anonymizer = Anonymizer(settings, own, clients.store, clients.bus, clients.engine)
    readiness = {
        **clients.readiness([settings.buckets.raw, settings.buckets.anonymized]),
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
        Catalog(own, clients.engine).handle,
        deadletter_topic=settings.topics.deadletter,
        retry=retry_policy(settings),
    )
    return Service(settings, app, bus=clients.bus, consumers=[consumer, labels])


def secret_ready(own: AnonymizerSettings) -> ReadinessCheck:
    def check() -> None:
        own.policy()  # raises, without the secret's value, when it is missing

    return check


def main() -> None:
    # pydicom logs the offending value of malformed elements; from a PACS that may be PHI.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    run(build(Settings(service_name=SERVICE_NAME)))
