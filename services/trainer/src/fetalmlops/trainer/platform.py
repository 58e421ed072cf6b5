"""A training run on the platform: the version uploaded, registered, gated and announced.

`run_on_platform` wraps `job.fit_and_package` for the cluster: the run is named by its snapshot,
model and configuration, so a restarted Job finds the version it registered instead of training
again; the folder goes to `<models bucket>/<model>/v<N>/`, the version to the registry, and the
events out — `fetal.models.trained`, then, if the gate lets it, `fetal.models.promoted`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from fetalmlops.common import model_version
from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import ModelVersion, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore
from fetalmlops.trainer import catalog, registry
from fetalmlops.trainer.job import Loader, Request, fit_and_package, training_run
from fetalmlops.trainer.snapshots import Manifest
from fetalmlops.v1 import models_pb2

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    store: ObjectStore
    bus: Bus
    engine: Engine

    @classmethod
    def of(cls, settings: Settings, clients: Clients) -> Platform:
        return cls(settings, clients.store, clients.bus, clients.engine)

    def storage_uri(self, model_name: str, version: int) -> str:
        return model_version.storage_uri(self.settings.buckets.models, model_name, version)


def run_on_platform(
    platform: Platform,
    manifest: Manifest,
    load: Loader,
    request: Request,
    workdir: Path,
    progress: bool = True,
) -> tuple[ModelVersion, registry.Decision]:
    """Train (unless this run registered its version already), upload, register, gate."""
    catalog.freeze(platform.engine, platform.store, platform.settings, manifest)
    run = training_run(request.model_name, manifest.id, request.config, request.fold)
    with session_scope(platform.engine) as session:
        done = registry.by_training_run(session, run)
        number = done.version if done else registry.next_version(session, request.model_name)
    if done is None:
        packaged = fit_and_package(
            manifest,
            load,
            request,
            number,
            workdir / run,
            progress,
            models_bucket=platform.settings.buckets.models,
        )
        upload(platform, packaged.directory, request.model_name, number)
        footprint = packaged.footprint
        with session_scope(platform.engine) as session:
            registry.register(
                session,
                ModelVersion(
                    model_name=request.model_name,
                    version=number,
                    backbone=request.config.backbone,
                    metrics=packaged.metrics,
                    storage_uri=platform.storage_uri(request.model_name, number),
                    artifact_uri=platform.storage_uri(request.model_name, number)
                    + model_version.mar_path(request.model_name),
                    energy_kwh=footprint.energy_kwh if footprint else None,
                    emissions_kg_co2e=footprint.emissions_kg_co2e if footprint else None,
                    drift_reference=packaged.drift_reference,
                    snapshot_id=manifest.id,
                    training_run=run,
                    recipe=request.config.to_dict(),
                    parent_version=request.parent_version,
                ),
            )
    with session_scope(platform.engine) as session:
        version = registry.by_training_run(session, run)
        assert version is not None
        announce_trained(platform, version)
        decision, archived = registry.promote_if_better(session, version, request.gate)
    if decision.promote:
        announce_promoted(platform, version, archived.version if archived else 0, decision)
    log.info(
        "model version registered",
        extra={"model": version.model_name, "version": version.version, "stage": version.stage},
    )
    return version, decision


def upload(platform: Platform, directory: Path, model_name: str, version: int) -> None:
    bucket, prefix = (
        platform.settings.buckets.models,
        model_version.version_prefix(model_name, version),
    )
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(directory).as_posix()
        with path.open("rb") as stream:
            platform.store.put(
                bucket, key, stream, length=path.stat().st_size, content_type=_content_type(path)
            )


def download(platform: Platform, model_name: str, version: int, directory: Path) -> None:
    """A registered version's files from `fetal-models` into a local directory."""
    bucket, prefix = (
        platform.settings.buckets.models,
        model_version.version_prefix(model_name, version),
    )
    for info in platform.store.list(bucket, prefix):
        target = directory / info.key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(platform.store.get(bucket, info.key))


def _content_type(path: Path) -> str:
    return {
        ".md": "text/markdown",
        ".png": "image/png",
        ".json": "application/json",
        ".properties": "text/plain",
    }.get(path.suffix, "application/octet-stream")


def announce_trained(platform: Platform, version: ModelVersion) -> None:
    metrics = {k: float(v) for k, v in version.metrics.items() if isinstance(v, int | float)}
    event = models_pb2.ModelTrained(
        model_name=version.model_name,
        version=version.version,
        storage_uri=version.storage_uri,
        snapshot_id=version.snapshot_id or "",
        metrics=metrics,
        energy_kwh=version.energy_kwh or 0.0,
        emissions_kg_co2e=version.emissions_kg_co2e or 0.0,
    )
    topic = platform.settings.topics.models_trained
    publish_event(platform.bus, topic, version.model_name, event, "trainer")


def announce_promoted(
    platform: Platform, version: ModelVersion, previous: int, decision: registry.Decision
) -> None:
    event = models_pb2.ModelPromoted(
        model_name=version.model_name,
        version=version.version,
        storage_uri=version.storage_uri,
        previous_version=previous,
        reason=decision.summary(),
    )
    topic = platform.settings.topics.models_promoted
    publish_event(platform.bus, topic, version.model_name, event, "trainer")
