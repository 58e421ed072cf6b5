"""The change-control gate on the real stack (Kafka, MinIO, PostgreSQL).

A catalog of phantom images, each read by two annotators (some of whom disagree), is written
where the anonymizer keeps it; `fetalmlops snapshot sequester` freezes the sequestered test set
and prints what the plan names. `fetalmlops train` (no plan) makes a weak production version:
the champion. The trainer service, started under a plan for the model, answers a drift alarm
from the monitor's segment of one scanner: it trains on a fresh snapshot that holds nothing of
the sequestered set and no disputed label, scores champion and challenger from their archives
in MinIO on the sequestered set and the drifted scanner's test patients, and registers the
challenger with its verdict, in PostgreSQL and in the audit trail, and on
`fetal.models.trained`; nothing is promoted. A request naming a snapshot that breaks the plan's
rules is dead-lettered with the reason, and `fetalmlops train` refuses a plan whose hash is not
the sequestered set's.

The catalog is written directly (the trainer reads it only through its read interface):
ingest and the anonymizer are tests/integration/test_training_end_to_end.py's business, and
leaving them out keeps this test to a couple of minutes.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.db import (
    Image,
    Label,
    ModelStage,
    ModelVersion,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.db.audit import entries as audit_entries
from fetalmlops.common.planes import Plane
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.profiles import PROFILES
from fetalmlops.monitor.samples import segment as monitor_segment
from fetalmlops.trainer.catalog import load_snapshot
from fetalmlops.trainer.challenge import verdict_message
from fetalmlops.trainer.data_rules import SEQUESTERED_IMAGE, TIE
from fetalmlops.v1 import models_pb2, training_pb2

from .ingest_service import from_beginning
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]
FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
PLAN_FILE = Path(__file__).parents[2] / "deploy" / "change-control" / "plan.yaml"
PLANES = [plane.value for plane in Plane]
DRIFTED = PROFILES["highend-b"]
# Bars a trained model clears on this small set: the test is of the loop, not of the model.
EASY: dict[str, Any] = {
    "macro_f1_non_inferiority_margin": 0.2,
    "recall_floors": dict.fromkeys(PLANES, 0.0),
    "segment_macro_f1_floor": 0.0,
    "ece_ceiling": 1.0,
    "latency_p95_ms_ceiling": 60_000,
}
TINY = ["--backbone", "tiny", "--input-size", "64", "--patience", "20", "--no-progress"]


@dataclass
class Site:
    tag: str
    owner: Settings  # the owner's view of the stack, with this test's topics
    trainer_env: dict[str, str]
    images: dict[str, tuple[str, str]]  # image id -> (patient, its annotators' verdict)
    work: Path

    @property
    def model(self) -> str:
        return f"planes-gate-{self.tag}"

    @property
    def cohorts(self) -> list[str]:
        return [f"{profile}-{self.tag}" for profile in PROFILES]

    def store(self) -> MinioStore:
        s = self.owner
        return MinioStore(
            s.minio_endpoint, s.minio_access_key, s.minio_secret_key.get_secret_value()
        )

    def fetalmlops(self, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FETALMLOPS), *arguments],
            env={**os.environ, **self.trainer_env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )

    def versions(self) -> dict[int, ModelVersion]:
        engine = create_engine_for(self.owner.database_url)
        try:
            with session_scope(engine) as session:
                rows = session.scalars(
                    sa.select(ModelVersion).where(ModelVersion.model_name == self.model)
                )
                return {row.version: row for row in rows}
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def site(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Site:
    work = tmp_path_factory.mktemp("gate")
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    owner = stack_settings(None).model_copy(update={"topics": topics})
    bus = KafkaBus(owner.kafka_bootstrap_servers)
    bus.ensure_topics(list(topics.model_dump().values()), 1)
    bus.close()
    upgrade(owner.database_url)
    trainer_env = {
        **settings_env(stack_settings("trainer").model_copy(update={"topics": topics})),
        "FETALMLOPS_TRAINER_MODEL_NAME": f"planes-gate-{tag}",
        "FETALMLOPS_TRAINER_WORKDIR": str(work / "trainer"),
        "FETALMLOPS_TRAINER_MIN_MACRO_F1": "0",
        "FETALMLOPS_TRAINER_MIN_CLASS_RECALL": "0",
        "FETALMLOPS_KAFKA_MAX_POLL_INTERVAL_MS": "1800000",
    }
    images = catalogue(owner, tag, work / "phantom")
    return Site(tag, owner, trainer_env, images, work)


def catalogue(owner: Settings, tag: str, out: Path) -> dict[str, tuple[str, str]]:
    """Phantom pictures in the anonymized bucket and their catalog rows: two annotators per
    image, who disagree on every tenth one."""
    generate(out, plan(24, seed=21), seed=21, fmt=OutputFormat.PNG)
    store = MinioStore(
        owner.minio_endpoint, owner.minio_access_key, owner.minio_secret_key.get_secret_value()
    )
    images: dict[str, tuple[str, str]] = {}
    engine = create_engine_for(owner.database_url)
    with session_scope(engine) as session:
        for n, row in enumerate(csv.DictReader((out / "labels.csv").open())):
            image_id, profile = f"gate-{tag}-{n:04d}", PROFILES[row["profile"]]
            key = f"canonical/{image_id}.png"
            store.put(owner.buckets.anonymized, key, (out / row["path"]).read_bytes())
            patient = f"{tag}-{row['patient']}"
            session.add(
                Image(id=image_id, sha256=image_id.ljust(64, "0"), object_key=key,
                      canonical_key=key, rows=600, columns=800, patient_pseudonym=patient,
                      cohort=f"{profile.name}-{tag}", device_manufacturer=profile.manufacturer,
                      device_model=profile.model)
            )  # fmt: skip
            second = row["label"]
            if n % 10 == 9:
                second = PLANES[(PLANES.index(second) + 1) % len(PLANES)]
            session.add(Label(image_id=image_id, plane=Plane(row["label"]), annotator="a"))
            session.add(Label(image_id=image_id, plane=Plane(second), annotator="b"))
            images[image_id] = (patient, "agreed" if second == row["label"] else TIE)
    engine.dispose()
    return images


@pytest.fixture(scope="module")
def sequestered(site: Site) -> dict[str, str]:
    cohorts = [option for c in site.cohorts for option in ("--cohort", c)]
    made = site.fetalmlops("snapshot", "sequester", "--share", "0.25", "--seed", "0", *cohorts)
    assert made.returncode == 0, made.stderr
    printed: dict[str, str] = yaml.safe_load(made.stdout)
    return printed


@pytest.fixture(scope="module")
def champion(site: Site, sequestered: dict[str, str]) -> ModelVersion:
    """A production version trained without a plan, one epoch: the challenger's champion."""
    cohorts = [option for c in site.cohorts for option in ("--cohort", c)]
    trained = site.fetalmlops("train", "--epochs", "1", *TINY, *cohorts)
    assert trained.returncode == 0, trained.stderr[-3000:]
    version = site.versions()[1]
    assert version.stage is ModelStage.PRODUCTION
    return version


def plan_file(site: Site, sequestered: dict[str, str], **data: Any) -> Path:
    document = yaml.safe_load(PLAN_FILE.read_text())
    document["model"] = site.model
    document["data"] |= {"min_agreeing_annotators": 2, "sequestered_test": sequestered, **data}
    document["acceptance"] |= EASY
    path = site.work / f"plan-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def governed(site: Site, sequestered: dict[str, str], champion: ModelVersion) -> Iterator[Site]:
    """The trainer service, started under the model's plan."""
    env = {**site.trainer_env, "FETALMLOPS_TRAINER_PLAN": str(plan_file(site, sequestered))}
    service = ServiceProcess("trainer", env, site.work / "trainer.log")
    service.start(timeout_s=120)
    try:
        yield site
    finally:
        service.stop()


def test_a_drift_retrain_is_judged_against_its_champion_and_becomes_a_challenger(
    governed: Site, sequestered: dict[str, str], champion: ModelVersion
) -> None:
    site, drifted = governed, monitor_segment(DRIFTED.manufacturer, DRIFTED.model)
    alarm = training_pb2.TrainingRequested(
        request_id=uuid.uuid4().hex,
        reason="drift",
        cohorts=site.cohorts,
        hyperparameters=training_pb2.Hyperparameters(epochs=10, seed=0),
        drift=training_pb2.DriftAlarm(model_name=site.model, model_version=1, segment=drifted),
    )
    publish(site, alarm)

    wait_for(lambda: 2 in site.versions() and site.versions()[2].gate is not None, 600, "v2")
    version = site.versions()[2]
    gate = version.gate
    assert gate is not None and gate["passed"], gate
    assert version.stage is ModelStage.CHALLENGER and version.parent_version == 1
    assert gate["champion_version"] == 1 and gate["checks"][0]["name"] == (
        "macro_f1_non_inferiority"
    )
    assert gate["sequestered_snapshot_id"] == sequestered["snapshot_id"]
    assert gate["sequestered_sha256"] == sequestered["sha256"]
    store, datasets = site.store(), site.owner.buckets.datasets
    held = load_snapshot(store, site.owner, sequestered["snapshot_id"])
    held_in_segment = sum(e.segment == drifted for e in held.entries)
    # The monitor's name of the drifted scanner finds the catalog's images of it.
    assert gate["images_per_segment"][drifted] > held_in_segment > 0
    assert gate["images"] > len(held.entries)

    # What v2 learnt from: nothing of the sequestered set or its patients, no disputed label;
    # the manifest in MinIO says what was left out, and why.
    trained_on = load_snapshot(store, site.owner, version.snapshot_id or "")
    assert trained_on.exclusions is not None
    excluded = trained_on.exclusions.images
    held_patients = {e.patient for e in held.entries}
    assert not {e.image_id for e in trained_on.entries} & set(held.assignment)
    assert not {e.patient for e in trained_on.entries} & held_patients
    assert {i for i, why in excluded.items() if why == SEQUESTERED_IMAGE} == set(held.assignment)
    disputed = {i for i, (p, v) in site.images.items() if v == TIE and p not in held_patients}
    assert disputed and {i for i, why in excluded.items() if why == TIE} == disputed
    assert store.stat(datasets, f"snapshots/{trained_on.id}.json").size > 0

    topics = site.owner.topics
    trained = [models_pb2.ModelTrained.FromString(r.value) for r in
               from_beginning(site.owner, [topics.models_trained])]  # fmt: skip
    (announced,) = [e for e in trained if e.version == 2]
    assert announced.gate == verdict_message(gate) and announced.parent_version == 1
    promoted = [models_pb2.ModelPromoted.FromString(r.value) for r in
                from_beginning(site.owner, [topics.models_promoted])]  # fmt: skip
    assert [e.version for e in promoted] == [1]  # the champion's, never the challenger's
    engine = create_engine_for(site.owner.database_url)
    with session_scope(engine) as session:
        trail = audit_entries(session, f"model:{site.model}:v2")
        assert [e.action for e in trail] == ["registered", "gate passed"]
        assert trail[1].details == gate
    engine.dispose()
    assert site.versions()[1].stage is ModelStage.PRODUCTION


def test_a_named_snapshot_that_breaks_the_plan_is_dead_lettered(
    governed: Site, champion: ModelVersion
) -> None:
    site, champion_snapshot = governed, champion.snapshot_id
    assert champion_snapshot is not None
    # The champion's snapshot was taken without a plan: it holds the sequestered set.
    request = training_pb2.TrainingRequested(
        request_id=uuid.uuid4().hex, snapshot_id=champion_snapshot
    )
    publish(site, request)

    def dead() -> list[str]:
        letters = from_beginning(site.owner, [site.owner.topics.deadletter])
        return [dict(r.headers).get("dlq-error", b"").decode() for r in letters]

    wait_for(lambda: any(champion_snapshot in reason for reason in dead()), 300, "dead letter")
    (reason,) = [r for r in dead() if champion_snapshot in r]
    assert "breaks the change-control plan's data rules" in reason
    assert "sequestered image" in reason
    assert 3 not in site.versions()


def test_train_refuses_a_plan_whose_sequestered_hash_is_not_the_set_s(
    site: Site, sequestered: dict[str, str]
) -> None:
    wrong = plan_file(site, sequestered, sequestered_test={**sequestered, "sha256": "e" * 64})
    refused = site.fetalmlops("train", "--plan", str(wrong), *TINY)
    assert refused.returncode == 2
    assert sequestered["sha256"] in refused.stderr and "e" * 64 in refused.stderr


def publish(site: Site, event: training_pb2.TrainingRequested) -> None:
    bus = KafkaBus(site.owner.kafka_bootstrap_servers)
    try:
        topic = site.owner.topics.training_requested
        publish_event(bus, topic, event.request_id, event, "test")
    finally:
        bus.close()
