"""Every service built for one process by its own ``main.build``, as `fetalmlops run` builds it.

On the embedded stand-ins the services share one set of clients — one in-process bus (the only
way its topics reach every service), one SQLite database and one directory store — which are
prepared first (migrations, buckets). On the real local stack each service connects on its
own, with its own credentials, exactly as it does in the cluster, to the stack's database or
another of its PostgreSQL's (migrated first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, select

from fetalmlops.anonymizer import main as anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.clients import Clients, connect
from fetalmlops.common.db import ModelStage, ModelVersion, session_scope, upgrade
from fetalmlops.common.service import Service
from fetalmlops.common.settings import Settings
from fetalmlops.inference import main as inference
from fetalmlops.inference.settings import InferenceSettings
from fetalmlops.ingest import main as ingest
from fetalmlops.ingest.settings import IngestSettings
from fetalmlops.monitor import main as monitor
from fetalmlops.monitor.settings import MonitorSettings
from fetalmlops.stack.config import DATABASE
from fetalmlops.stack.stack import settings_values
from fetalmlops.trainer import main as trainer
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.up.layout import (
    SCOPES,
    SERVICES,
    Choices,
    embedded_values,
    service_settings,
)


@dataclass(frozen=True)
class Inference:
    """The inference service, which KServe's ModelServer runs on the main thread."""

    settings: Settings
    own: InferenceSettings
    cache: Path  # where versions are unpacked
    serving: inference.Serving


@dataclass(frozen=True)
class Platform:
    services: dict[str, Service]  # every other service, in start order
    inference: Inference
    ae_title: str  # the C-STORE SCP's


def build(choices: Choices) -> Platform:
    """Every service, built; raises what a service's build raises (SystemExit with the reason
    for a configuration it refuses)."""
    layout = choices.layout
    values: dict[str, dict[str, Any]]
    if choices.stack:
        database = choices.database or DATABASE
        upgrade(str(settings_values(None, database=database)["database_url"]))
        values = {name: settings_values(name, database=database) for name in SERVICES}
        shared = None
    else:
        values = dict.fromkeys(SERVICES, embedded_values(layout))
        shared = prepared(Settings(**values["ingest"]))
    settings = {name: service_settings(name, choices.ports, values[name]) for name in values}
    token = choices.secrets.token
    services = {
        "ingest": ingest.build(
            settings["ingest"],
            IngestSettings(
                scp_port=choices.ports.scp,
                tokens={token: SCOPES["ingest"]},
            ),
            shared,
        ),
        "anonymizer": anonymizer.build(
            settings["anonymizer"],
            AnonymizerSettings(secret=SecretStr(choices.secrets.anonymizer_secret)),
            shared,
        ),
        "trainer": trainer.build(
            settings["trainer"],
            TrainerSettings(
                model_name=choices.model,
                workdir=layout.runs,
                plan=choices.plan,
                tokens={token: SCOPES["trainer"]},
            ),
            shared,
        ),
        "monitor": monitor.build(settings["monitor"], MonitorSettings(plan=choices.plan), shared),
    }
    ae_title = IngestSettings().scp_ae_title
    own = InferenceSettings(
        # The embedded bus keeps no topic across restarts: what was promoted is read back.
        model_uri=None if shared is None else production(shared.engine, choices.model),
        model_name=choices.model,
        reload_on_promotion=True,
        follow_rollouts=True,
        cache_dir=layout.cache,
    )
    serving = inference.build(
        settings["inference"], own, layout.cache, bus=None if shared is None else shared.bus
    )
    return Platform(
        services, Inference(settings["inference"], own, layout.cache, serving), ae_title
    )


def prepared(settings: Settings) -> Clients:
    """The embedded clients, with the database migrated and every bucket made."""
    upgrade(settings.database_url)
    clients = connect(settings)
    clients.store.ensure_buckets(settings.buckets.all())
    return clients


def production(engine: Engine, model: str) -> str | None:
    """Where the registry's production version of ``model`` is, if it has one."""
    with session_scope(engine) as session:
        return session.scalar(
            select(ModelVersion.storage_uri).where(
                ModelVersion.model_name == model, ModelVersion.stage == ModelStage.PRODUCTION
            )
        )
