"""From phantom studies to a promoted, servable model, on the real stack.

Phantom DICOM studies are imported through ingest (`fetalmlops dataset import`: upload, label,
cohort, patient), anonymised and catalogued by the anonymizer process; `fetalmlops train` (the
Kubernetes Job's entry point) snapshots the catalog, trains a small model, and leaves the
version in MinIO in the KServe layout, in the registry, promoted, announced on Kafka. The
trainer service then trains the same snapshot again from a `fetal.training.requested` event:
same seed and snapshot, same metrics. A real TorchServe serves the `.mar` from MinIO and
answers as the archive's own TorchScript does in process. Finally the inference service serves
the promoted version, classifies a study as the scanner wrote it, and its prediction event is
read back from Kafka, with no trace of the study's PHI in the event, the spans or the log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import sys
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import torch

from fetalmlops.anonymizer.catalog import image_id as catalog_image_id
from fetalmlops.archive.handler import PlaneClassifier
from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.db import (
    DatasetSnapshot,
    Image,
    Label,
    ModelStage,
    ModelVersion,
    create_engine_for,
    session_scope,
)
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.phi import hits, planted_phi, sidecar
from fetalmlops.stack.torchserve import running_torchserve
from fetalmlops.v1 import models_pb2, predictions_pb2, training_pb2

from .collector import otlp_collector
from .ingest_service import IMPORTER_TOKEN, RunningIngest, from_beginning, running_ingest
from .phantoms import tag_cohorts
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(1200)]
SECRET = "training-e2e-secret"
FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
# Small and quick on two cores; the gate's floors are the unit tests' business.
TRAINING = {"backbone": "tiny", "epochs": "15", "patience": "15", "input_size": "64", "seed": "0"}


@dataclass
class Run:
    tag: str
    settings: Settings  # the owner's view of the stack, with this run's topics
    trainer_env: dict[str, str]
    trainer: ServiceProcess
    images: set[str]  # image ids of the imported studies
    work: Path

    @property
    def model(self) -> str:
        return f"planes-{self.tag}"

    def cohort(self, profile: str) -> str:
        return f"{profile}-{self.tag}"

    def store(self) -> MinioStore:
        s = self.settings
        secret = s.minio_secret_key.get_secret_value()
        return MinioStore(s.minio_endpoint, s.minio_access_key, secret)

    def version(self, model: str) -> ModelVersion | None:
        engine = create_engine_for(self.settings.database_url)
        try:
            with session_scope(engine) as session:
                return session.scalars(
                    sa.select(ModelVersion).where(ModelVersion.model_name == model)
                ).one_or_none()
        finally:
            engine.dispose()


def phantom(out: Path, tag: str) -> Path:
    """Phantom studies whose cohorts name this run, so the catalog's older images stay out."""
    seed = secrets.randbelow(10**6)
    generate(out, plan(48, seed=seed), seed=seed, fmt=OutputFormat.DICOM)
    return tag_cohorts(out, tag)


@pytest.fixture(scope="module")
def run(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("training")
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(stack_settings(None).kafka_bootstrap_servers)
    bus.ensure_topics(list(topics.model_dump().values()), 3)
    bus.close()
    dataset = phantom(work / "phantom", tag)
    studies = sorted((dataset / "dicom").glob("*.dcm"))
    images = {
        catalog_image_id(SECRET.encode(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in studies
    }

    update = {"topics": topics}
    anonymizer_env = {
        **settings_env(stack_settings("anonymizer").model_copy(update=update)),
        "FETALMLOPS_ANONYMIZER_SECRET": SECRET,
    }
    trainer_env = {
        **settings_env(stack_settings("trainer").model_copy(update=update)),
        "FETALMLOPS_TRAINER_WORKDIR": str(work / "trainer"),
        "FETALMLOPS_TRAINER_MIN_MACRO_F1": "0.3",
        "FETALMLOPS_TRAINER_MIN_CLASS_RECALL": "0.0",
        "FETALMLOPS_KAFKA_MAX_POLL_INTERVAL_MS": "1800000",
    }
    anonymizer = ServiceProcess("anonymizer", anonymizer_env, work / "anonymizer.log")
    trainer = ServiceProcess("trainer", trainer_env, work / "trainer.log")
    ingest_settings = stack_settings("ingest").model_copy(update=update)
    with running_ingest(stack_settings(None), ingest_settings, work / "ingest.log") as ingest:
        anonymizer.start()
        trainer.start()
        try:
            owner = stack_settings(None).model_copy(update=update)
            run = Run(tag, owner, trainer_env, trainer, images, work)
            load(run, ingest, dataset)
            yield run
        finally:
            trainer.stop()
            anonymizer.stop()


def load(run: Run, ingest: RunningIngest, dataset: Path) -> None:
    """Import the studies and wait until every one is catalogued with its label."""
    subprocess.run(
        [
            str(FETALMLOPS), "dataset", "import", str(dataset), "--format", "csv",
            "--url", ingest.url, "--token", IMPORTER_TOKEN,
            "--journal-dir", str(run.work / "journal"),
        ],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    engine = create_engine_for(run.settings.database_url)

    def catalogued() -> bool:
        with session_scope(engine) as session:
            images = session.scalar(
                sa.select(sa.func.count()).select_from(Image).where(Image.id.in_(run.images))
            )
            labels = session.scalar(
                sa.select(sa.func.count()).select_from(Label).where(Label.image_id.in_(run.images))
            )
        return images == labels == len(run.images)

    wait_for(catalogued, 300, f"{len(run.images)} studies catalogued with their labels")
    engine.dispose()


def events(settings: Settings, topic: str) -> list[bytes]:
    return [r.value for r in from_beginning(settings, [topic])]


@pytest.fixture(scope="module")
def trained(run: Run) -> ModelVersion:
    """`fetalmlops train`, as the Kubernetes Job runs it, on a fresh snapshot of the catalog."""
    env = {**run.trainer_env, "FETALMLOPS_TRAINER_MODEL_NAME": run.model}
    command = [str(FETALMLOPS), "train", "--no-progress", "--out", str(run.work / "out")]
    command += [f"--{k.replace('_', '-')}={v}" for k, v in TRAINING.items()]
    command += ["--cohort", run.cohort("highend-a"), "--cohort", run.cohort("highend-b")]
    command += ["--ood-cohort", run.cohort("portable")]
    result = subprocess.run(
        command, env={**run.trainer.env, **env}, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = run.version(run.model)
    assert version is not None, result.stdout
    return version


def test_the_job_leaves_a_promoted_version_in_the_kserve_layout(
    run: Run, trained: ModelVersion
) -> None:
    store, bucket = run.store(), run.settings.buckets.models
    keys = {info.key for info in store.list(bucket, f"{run.model}/v1/")}
    layout = {
        f"model-store/{run.model}.mar", "config/config.properties", "model-card.md",
        "metrics.json", "drift_reference.json", "confusion_matrix.png", "reliability.png",
    }  # fmt: skip
    assert {f"{run.model}/v1/{name}" for name in layout} <= keys
    properties = store.get(bucket, f"{run.model}/v1/config/config.properties").decode()
    assert "model_snapshot" in properties and f"{run.model}.mar" in properties

    assert trained.stage is ModelStage.PRODUCTION and trained.version == 1
    assert trained.storage_uri == f"s3://{bucket}/{run.model}/v1/"
    assert trained.energy_kwh and trained.energy_kwh > 0 and trained.emissions_kg_co2e
    assert trained.drift_reference and trained.drift_reference["classes"]
    metrics = trained.metrics
    assert 0 < metrics["val_macro_f1"] <= 1 and "test" in metrics
    assert f"ood_{run.cohort('portable')}_macro_f1" in metrics, "scored out of domain"
    card = store.get(bucket, f"{run.model}/v1/model-card.md").decode()
    assert run.cohort("portable") in card and trained.snapshot_id in card

    engine = create_engine_for(run.settings.database_url)
    with session_scope(engine) as session:
        snapshot = session.get(DatasetSnapshot, trained.snapshot_id)
        assert snapshot is not None and snapshot.manifest_uri.endswith(f"{snapshot.id}.json")
        cohorts = {c for c in snapshot.filters["cohorts"]}
        assert cohorts == {run.cohort("highend-a"), run.cohort("highend-b")}
    engine.dispose()
    assert (run.work / "out" / "model-store" / f"{run.model}.mar").exists(), "--out copy"

    trained_events = [models_pb2.ModelTrained.FromString(v) for v in
                      events(run.settings, run.settings.topics.models_trained)]  # fmt: skip
    promoted = [models_pb2.ModelPromoted.FromString(v) for v in
                events(run.settings, run.settings.topics.models_promoted)]  # fmt: skip
    assert [(e.model_name, e.version) for e in trained_events] == [(run.model, 1)]
    assert [(e.model_name, e.version, e.previous_version) for e in promoted] == [(run.model, 1, 0)]
    assert promoted[0].storage_uri == trained.storage_uri


def test_a_request_over_kafka_trains_what_the_same_command_trained(
    run: Run, trained: ModelVersion
) -> None:
    repeat = f"{run.model}-again"
    request = training_pb2.TrainingRequested(
        request_id=uuid.uuid4().hex,
        model_name=repeat,
        snapshot_id=trained.snapshot_id or "",
        backbone=TRAINING["backbone"],
        strategy=training_pb2.TRAINING_STRATEGY_FINE_TUNE,
        reason="test",
        hyperparameters=training_pb2.Hyperparameters(
            **{k: int(v) for k, v in TRAINING.items() if k != "backbone"}
        ),
        held_out_cohorts=[run.cohort("portable")],
    )
    bus = KafkaBus(run.settings.kafka_bootstrap_servers)
    publish_event(bus, run.settings.topics.training_requested, request.request_id, request, "test")
    bus.close()

    wait_for(lambda: run.version(repeat) is not None, 600, "the trainer service's version")
    again = run.version(repeat)
    assert again is not None and again.snapshot_id == trained.snapshot_id
    assert again.metrics["validation"] == trained.metrics["validation"]
    assert again.metrics["test"] == trained.metrics["test"]
    assert again.metrics["best_epoch"] == trained.metrics["best_epoch"]
    # Both doors built the same run: the held-out cohort scored as out-of-domain, the same way.
    assert again.metrics["out_of_domain"] == trained.metrics["out_of_domain"]


def test_torchserve_answers_as_the_archive_does_in_process(run: Run, trained: ModelVersion) -> None:
    store = run.store()
    mar = run.work / "model-store" / f"{run.model}.mar"
    mar.parent.mkdir(exist_ok=True)
    key = f"{run.model}/v1/model-store/{mar.name}"
    mar.write_bytes(store.get(run.settings.buckets.models, key))
    unpacked = run.work / "unpacked"
    zipfile.ZipFile(mar).extractall(unpacked)
    in_process = PlaneClassifier.load(unpacked, torch.device("cpu"))
    image_id = sorted(run.images)[0]
    png = store.get(run.settings.buckets.anonymized, f"canonical/{image_id}.png")
    (expected,) = in_process.answer([png])

    with running_torchserve(mar.parent, [f"{run.model}={mar.name}"], run.work / "ts") as server:
        request = urllib.request.Request(
            f"{server.inference_url}/predictions/{run.model}",
            data=png,
            headers={"Content-Type": "image/png"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())

    assert answer["label"] == expected["label"]
    served = np.array([answer["probabilities"][c] for c in in_process.classes])
    local = np.array([expected["probabilities"][c] for c in in_process.classes])
    assert np.allclose(served, local, atol=1e-5)


def test_the_promoted_version_answers_a_scanner_study_and_tells_the_monitor(
    run: Run, trained: ModelVersion, stack_settings: Callable[[str | None], Settings]
) -> None:
    """The last hop: the inference service serves the promoted version from MinIO; a study as
    the scanner wrote it (PHI in its header and banner) is classified, and its PHI-free
    prediction event is read back from the real `fetal.predictions` topic."""
    study = sorted((run.work / "phantom" / "dicom").glob("*.dcm"))[0]
    phi = planted_phi([sidecar(study)])
    inference = stack_settings("inference").model_copy(update={"topics": run.settings.topics})
    with otlp_collector() as (endpoint, spans):
        env = settings_env(inference.model_copy(update={"otlp_endpoint": endpoint}))
        env |= {"FETALMLOPS_INFERENCE_MODEL_URI": trained.storage_uri or ""}
        service = ServiceProcess("inference", env, run.work / "inference.log")
        service.start(timeout_s=120)
        try:
            body = {"instances": [{"b64": base64.b64encode(study.read_bytes()).decode()}]}
            response = httpx.post(
                f"{service.url}/v1/models/{run.model}:predict", json=body, timeout=60
            )
            assert response.status_code == 200, response.text
            (answer,) = response.json()["predictions"]
            assert answer["model_version"] == "1"

            def published() -> list[predictions_pb2.PredictionMade]:
                events = events_of(run.settings, run.settings.topics.predictions)
                return [e for e in events if e.prediction_id == answer["prediction_id"]]

            wait_for(lambda: bool(published()), 60, "the prediction event on Kafka")
        finally:
            assert service.stop() == 0
        exported = [text.encode() for text in spans.texts()]

    (event,) = published()
    assert (event.model_name, event.model_version) == (run.model, 1)
    assert event.predicted_plane == answer["label"]
    assert dict(event.probabilities) == pytest.approx(answer["probabilities"], abs=1e-6)
    assert event.device.manufacturer and len(event.embedding_summary) > 0
    assert 0 < event.image_statistics.mean < 1 and event.latency_ms > 0
    assert any(b"classify planes" in span for span in exported), "the service exported spans"
    records = from_beginning(run.settings, [run.settings.topics.predictions])
    channels = {
        "events": [r.value + (r.key or b"") + repr(r.headers).encode() for r in records],
        "spans": exported,
        "log": [(run.work / "inference.log").read_bytes()],
        "answer": [response.content],
    }
    assert {name: hits(phi, blobs) for name, blobs in channels.items()} == {
        name: set() for name in channels
    }
    assert hits(phi, [study.read_bytes()]), "the search finds the PHI where it is"


def events_of(settings: Settings, topic: str) -> list[predictions_pb2.PredictionMade]:
    return [predictions_pb2.PredictionMade.FromString(v) for v in events(settings, topic)]
