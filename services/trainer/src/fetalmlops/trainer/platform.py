"""A training run on the platform: the version uploaded, registered, gated and announced.

`run_on_platform` wraps `job.fit_and_package` for the cluster: the run is named by its snapshot,
model and configuration, so a restarted Job finds the version it registered instead of training
again; the folder goes to `<models bucket>/<model>/v<N>/`, the version to the registry, and the
events out — `fetal.models.trained`, then, if the gate lets it, `fetal.models.promoted`.

Under a change-control plan (`governance.Governance`) nothing is promoted here: the version's
archive and the champion's, both as stored in the models bucket, are scored on the same images
(`challenge.evaluation_set`, `scoring`) and judged by the plan's acceptance criteria; the
verdict makes the version a challenger or rejects it, and `fetal.models.trained` carries it. A
restarted run whose version has no verdict yet is judged again (same images, same bootstrap
seed); one that has a verdict announces it again, unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from fetalmlops.changecontrol.acceptance import judge
from fetalmlops.common import model_version
from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import ModelVersion, session_scope
from fetalmlops.common.db.audit import entries
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectNotFound, ObjectStore
from fetalmlops.trainer import catalog, challenge, registry, scoring
from fetalmlops.trainer.card.history import Change, change_history, with_history
from fetalmlops.trainer.governance import Governance
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
    governance: Governance | None = None,
) -> tuple[ModelVersion, registry.Decision]:
    """Train (unless this run registered its version already), upload, register, gate: by the
    registry's own gate, or under ``governance`` by the plan's (the decision then promotes
    nothing and says what the verdict was)."""
    if governance is not None:
        admissible(governance, manifest, request)
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
    if governance is not None:
        return judged(platform, governance, manifest, load, request, run, workdir / run / "gate")
    with session_scope(platform.engine) as session:
        version = registry.by_training_run(session, run)
        assert version is not None
        announce_trained(platform, version)
        decision, archived = registry.promote_if_better(session, version, request.gate)
    if decision.promote:
        announce_promoted(platform, version, archived.version if archived else 0, decision)
    for changed in [version.version] + ([archived.version] if archived else []):
        refresh_card(platform, version.model_name, changed)
    log.info(
        "model version registered",
        extra={"model": version.model_name, "version": version.version, "stage": version.stage},
    )
    return version, decision


def admissible(governance: Governance, manifest: Manifest, request: Request) -> None:
    """ValueError unless the plan governs this model and ``manifest`` holds nothing of its
    sequestered set: the last guard, whichever door the run came through."""
    if request.model_name != governance.plan.model:
        raise ValueError(
            f"the trainer works under the change-control plan of {governance.plan.model!r}: "
            f"it does not train {request.model_name!r}"
        )
    rules = governance.rules()
    seen = [
        e.image_id
        for e in manifest.entries
        if e.image_id in rules.sequestered_images or e.patient in rules.sequestered_patients
    ]
    if seen:
        raise ValueError(
            f"snapshot {manifest.id} holds {len(seen)} images of the sequestered test set "
            f"{governance.sequestered.id} or its patients (e.g. {seen[0]})"
        )


def judged(
    platform: Platform,
    governance: Governance,
    manifest: Manifest,
    load: Loader,
    request: Request,
    run: str,
    workdir: Path,
) -> tuple[ModelVersion, registry.Decision]:
    """The registered version of ``run`` with the plan's verdict: reached now when it has none
    yet, else the one it has; announced either way."""
    with session_scope(platform.engine) as session:
        version = registry.by_training_run(session, run)
        assert version is not None
    if version.gate is None:
        evidence = judge_version(platform, governance, manifest, load, request, version, workdir)
        with session_scope(platform.engine) as session:
            version = registry.by_training_run(session, run)
            assert version is not None
            if version.gate is None:
                registry.record_verdict(session, version, evidence)
    assert version.gate is not None
    refresh_card(platform, version.model_name, version.version)
    announce_trained(platform, version)
    log.info(
        "model version judged",
        extra={"model": version.model_name, "version": version.version, "stage": version.stage},
    )
    return version, registry.Decision(False, [challenge.summary(version.gate)])


def judge_version(
    platform: Platform,
    governance: Governance,
    manifest: Manifest,
    load: Loader,
    request: Request,
    version: ModelVersion,
    workdir: Path,
) -> dict[str, Any]:
    """The plan's verdict on ``version`` against the production version, with its evidence:
    both archives as stored, scored on the same images on this machine's CPU."""
    images = challenge.evaluation_set(governance.sequestered, manifest, request.drift_segment)
    with session_scope(platform.engine) as session:
        champion = registry.production(session, version.model_name)
        champion_version = champion.version if champion is not None else 0
    numbers = [n for n in (champion_version, version.version) if n]
    models = [
        scoring.unpacked(fetch_archive(platform, version.model_name, n, workdir), workdir / f"v{n}")
        for n in numbers
    ]
    scores = scoring.score(models, images, load)
    champion_scores = scores[0] if champion_version else None
    seed = request.config.seed
    verdict = judge(governance.plan.acceptance, champion_scores, scores[-1], seed)
    latency = {"challenger": scores[-1].latency_p95_ms}
    if champion_scores is not None:
        latency["champion"] = champion_scores.latency_p95_ms
    return challenge.evidence(
        verdict, governance, champion_version, images, request.drift_segment, seed, latency
    )


def fetch_archive(platform: Platform, model_name: str, version: int, directory: Path) -> Path:
    """A registered version's `.mar`, as the models bucket holds it, into ``directory``."""
    key = model_version.version_prefix(model_name, version) + model_version.mar_path(model_name)
    target = directory / f"v{version}.mar"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(platform.store.get(platform.settings.buckets.models, key))
    return target


def refresh_card(platform: Platform, model_name: str, number: int) -> None:
    """The version's model card in `fetal-models` rewritten with its change history (its
    entries of the audit trail), after each decision the registry takes on it; a version
    without a card (planted by hand) is left as it is."""
    subject = f"model:{model_name}:v{number}"
    with session_scope(platform.engine) as session:
        changes = [
            Change(entry.at, entry.actor, entry.action, entry.details, entry.hash)
            for entry in entries(session, subject)
            if entry.subject == subject  # not v10's under v1's prefix
        ]
    bucket = platform.settings.buckets.models
    key = model_version.version_prefix(model_name, number) + model_version.CARD
    try:
        card = platform.store.get(bucket, key).decode()
    except ObjectNotFound:
        return
    rewritten = with_history(card, change_history(changes)).encode()
    platform.store.put(bucket, key, rewritten, content_type="text/markdown")


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
        parent_version=version.parent_version or 0,
    )
    if version.gate is not None:
        event.gate.CopyFrom(challenge.verdict_message(version.gate))
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
