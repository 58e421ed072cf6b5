"""The champion/challenger gate under a change-control plan, run for real on the embedded
platform (directory store, in-process bus, SQLite): tiny models trained on the phantom,
packaged, and scored from their archives as they are served.

The same on the real stack: tests/integration/test_trainer_gate.py.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from fetalmlops.archive.handler import PlaneClassifier
from fetalmlops.changecontrol.plan import ChangeControlPlan, PlanFile, plan_digest
from fetalmlops.common.bus import EmbeddedBus, Record, Rejected, read_event
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
from fetalmlops.common.db.audit import verify
from fetalmlops.common.events import SCHEMA_HEADER, schema_name
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore, ObjectNotFound
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.metrics import classification
from fetalmlops.trainer import catalog, local, registry
from fetalmlops.trainer.challenge import verdict_message
from fetalmlops.trainer.cli import snapshots, train_command
from fetalmlops.trainer.data_rules import SEQUESTERED_IMAGE, sequester
from fetalmlops.trainer.governance import (
    PlanForAnotherModel,
    SequesteredMismatch,
    govern,
    governing_plan,
    plan_file,
)
from fetalmlops.trainer.job import Request
from fetalmlops.trainer.main import Trainer, build
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.registry import Gate
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import CLASSES, Entry, Filters, Manifest, SplitSpec, snapshot
from fetalmlops.trainer.training import TrainConfig
from fetalmlops.v1 import models_pb2, training_pb2

CONFIG = TrainConfig(epochs=3, patience=3, input_size=64, batch_size=32)
PLAN_FILE = Path(__file__).parents[3] / "deploy" / "change-control" / "plan.yaml"
# Bars any model clears (short of an unmeasurable figure) and bars none can.
EASY: dict[str, Any] = {
    "macro_f1_non_inferiority_margin": 0.2,
    "recall_floors": dict.fromkeys(CLASSES, 0.0),
    "segment_macro_f1_floor": 0.0,
    "ece_ceiling": 1.0,
    "latency_p95_ms_ceiling": 60_000,
}
IMPOSSIBLE: dict[str, Any] = {
    "macro_f1_non_inferiority_margin": 0.0,
    "recall_floors": dict.fromkeys(CLASSES, 1.0),
    "segment_macro_f1_floor": 1.0,
    "ece_ceiling": 0.0,
    "latency_p95_ms_ceiling": 1e-6,  # a nanosecond a forward pass
}


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory) -> list[Entry]:
    out = tmp_path_factory.mktemp("phantom")
    generate(out, plan(18, seed=12), seed=12, fmt=OutputFormat.PNG)
    return local.dataset_entries(out)


@pytest.fixture(scope="module")
def sequestered(entries: list[Entry]) -> Manifest:
    held = sequester("sequestered", entries, 0.25, seed=0)
    # The set must hold every plane, or a recall floor has nothing to measure and fails.
    assert set(held.counts()["test"]) == set(CLASSES)
    return held


def site(root: Path) -> Platform:
    url = f"sqlite:///{root}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=root / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    return Platform(settings, store, EmbeddedBus(partitions=1), create_engine_for(url))


def change_control(held: Manifest, model: str = "planes", **acceptance: Any) -> ChangeControlPlan:
    """The project's plan for ``model``, judged on ``held``, with ``acceptance`` changed."""
    document = yaml.safe_load(PLAN_FILE.read_text())
    document["model"] = model
    document["data"]["min_agreeing_annotators"] = 1  # the phantom has one reading an image
    document["data"]["sequestered_test"] = {"snapshot_id": held.id, "sha256": held.sha256}
    document["acceptance"] |= acceptance
    return ChangeControlPlan.model_validate(document)


def request(**changes: Any) -> Request:
    return replace(Request("planes", CONFIG, Gate(0.0, 0.0, 0.0), synthetic=True), **changes)


def one_reading(entries: list[Entry]) -> list[tuple[Entry, tuple[str]]]:
    return [(e, (e.plane,)) for e in entries]


def announced(platform: Platform) -> list[Any]:
    topics = platform.settings.topics
    subscription = platform.bus.subscribe([topics.models_trained, topics.models_promoted], "t")
    return [read_event(r) for r in subscription.poll(0.1)]


def served(platform: Platform, version: int, root: Path) -> PlaneClassifier:
    """The version's archive from the models bucket, loaded as the inference service does."""
    mar = platform.store.get(
        platform.settings.buckets.models, f"planes/v{version}/model-store/planes.mar"
    )
    zipfile.ZipFile(io.BytesIO(mar)).extractall(root)
    return PlaneClassifier.load(root, torch.device("cpu"))


def never(entry: Entry) -> Callable[[], bytes]:
    raise AssertionError("a judged run neither trains nor scores again")


def test_a_first_version_that_clears_the_plan_becomes_a_challenger_with_its_verdict(
    entries: list[Entry], sequestered: Manifest, tmp_path: Path
) -> None:
    platform = site(tmp_path)
    catalog.freeze(platform.engine, platform.store, platform.settings, sequestered)
    governance = govern(change_control(sequestered, **EASY), platform.store, platform.settings)
    manifest = governance.rules().snapshot(
        "planes", one_reading(entries), Filters(), SplitSpec(seed=0)
    )

    version, decision = run_on_platform(
        platform, manifest, local.file_loader, request(), tmp_path / "work", False, governance
    )

    assert version.stage is ModelStage.CHALLENGER and not decision.promote
    gate = version.gate
    assert gate is not None and gate["passed"], decision.summary()
    assert gate["champion_version"] == 0  # the first version: judged alone
    names = [check["name"] for check in gate["checks"]]
    assert "macro_f1_non_inferiority" not in names and "ece" in names
    assert (gate["plan_version"], gate["plan_digest"]) == ("2026.1", governance.digest)
    assert gate["sequestered_snapshot_id"] == sequestered.id
    assert gate["sequestered_sha256"] == sequestered.sha256
    assert gate["images"] == len(sequestered.entries)
    assert gate["images_per_segment"] == dict(Counter(e.segment for e in sequestered.entries))

    # Scored as served: the archive in the models bucket, answering the sequestered images.
    classifier = served(platform, 1, tmp_path / "served")
    answers = classifier.answer([local.file_loader(e)() for e in sequestered.entries])
    truth = [CLASSES.index(e.plane) for e in sequestered.entries]
    predicted = [CLASSES.index(a["label"]) for a in answers]
    recall = classification.per_class_recall(
        classification.confusion_matrix(np.array(truth), np.array(predicted), len(CLASSES))
    )
    measured = {check["name"]: check["value"] for check in gate["checks"]}
    for index, plane in enumerate(CLASSES):
        assert measured[f"recall[{plane}]"] == pytest.approx(recall[index])

    events = announced(platform)
    (trained,) = [e for e in events if isinstance(e, models_pb2.ModelTrained)]
    assert trained.gate == verdict_message(gate) and trained.gate.passed
    assert not [e for e in events if isinstance(e, models_pb2.ModelPromoted)]
    with session_scope(platform.engine) as session:
        trail = audit_entries(session, "model:planes:v1")
        assert [e.action for e in trail] == ["registered", "gate passed"]
        assert trail[1].details == gate and verify(audit_entries(session)) == []
        assert registry.production(session, "planes") is None  # nothing promoted

    # No sequestered image, nor any image of a sequestered patient, was trained on; the
    # snapshot in the datasets bucket says what it left out and why.
    stored = catalog.load_snapshot(platform.store, platform.settings, version.snapshot_id or "")
    held_patients = {e.patient for e in sequestered.entries}
    assert not {e.image_id for e in stored.entries} & set(sequestered.assignment)
    assert not {e.patient for e in stored.entries} & held_patients
    assert stored.exclusions is not None
    assert stored.exclusions.images == dict.fromkeys(sequestered.assignment, SEQUESTERED_IMAGE)
    assert stored.exclusions.sequestered_sha256 == sequestered.sha256


def test_a_failing_challenger_killed_before_its_verdict_is_judged_once_and_rejected(
    entries: list[Entry], sequestered: Manifest, tmp_path: Path
) -> None:
    platform = site(tmp_path)
    catalog.freeze(platform.engine, platform.store, platform.settings, sequestered)
    champion, _ = run_on_platform(
        platform,
        snapshot("planes", entries, Filters(), SplitSpec(seed=0)),
        local.file_loader,
        request(),
        tmp_path / "work",
        False,
    )
    assert champion.stage is ModelStage.PRODUCTION and champion.version == 1
    drifted = "highend-b"  # the phantom's scanner profile is its device
    governance = govern(
        change_control(sequestered, **IMPOSSIBLE), platform.store, platform.settings
    )
    manifest = governance.rules(drifted).snapshot(
        "planes", one_reading(entries), Filters(), SplitSpec(seed=0)
    )
    alarm = request(parent_version=1, drift_segment=drifted)

    # Killed after registering, before the verdict: the champion's archive cannot be read.
    models, key = platform.settings.buckets.models, "planes/v1/model-store/planes.mar"
    archive = platform.store.get(models, key)
    platform.store.delete(models, key)
    with pytest.raises(ObjectNotFound):
        run_on_platform(
            platform, manifest, local.file_loader, alarm, tmp_path / "work", False, governance
        )
    with session_scope(platform.engine) as session:
        pending = session.scalars(select(ModelVersion).where(ModelVersion.version == 2)).one()
        assert pending.stage is ModelStage.CANDIDATE and pending.gate is None
    platform.store.put(models, key, archive)

    version, decision = run_on_platform(
        platform, manifest, local.file_loader, alarm, tmp_path / "work", False, governance
    )

    assert version.version == 2 and version.stage is ModelStage.REJECTED
    gate = version.gate
    assert gate is not None and not gate["passed"] and gate["champion_version"] == 1
    first = gate["checks"][0]
    assert first["name"] == "macro_f1_non_inferiority" and first["value"] is not None
    assert {"champion", "challenger"} == set(gate["latency_p95_ms"])
    # The drifted scanner's test patients were scored beside the sequestered set.
    extra = [e for e in manifest.split("test") if e.segment == drifted]
    held = [e for e in sequestered.entries if e.segment == drifted]
    assert extra and gate["images_per_segment"][drifted] == len(held) + len(extra)
    assert gate["images"] == len(sequestered.entries) + len(extra)
    assert gate["drift_segment"] == drifted and "failed:" in decision.summary()

    # A replay neither trains nor judges again: it announces the same verdict.
    again, _ = run_on_platform(
        platform, manifest, never, alarm, tmp_path / "work", False, governance
    )
    assert again.gate == gate and again.stage is ModelStage.REJECTED
    events = announced(platform)
    trained = [e for e in events if isinstance(e, models_pb2.ModelTrained) and e.version == 2]
    assert len(trained) == 2 and all(e.gate == verdict_message(gate) for e in trained)
    assert all(e.parent_version == 1 and not e.gate.passed for e in trained)
    promoted = [e for e in events if isinstance(e, models_pb2.ModelPromoted)]
    assert [e.version for e in promoted] == [1]  # the champion's own, never the challenger
    with session_scope(platform.engine) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 2
        production = registry.production(session, "planes")
        assert production is not None and production.version == 1
        trail = [e.action for e in audit_entries(session, "model:planes:v2")]
        assert trail == ["registered", "gate failed"]


def test_a_plan_that_cannot_govern_the_run_is_refused(
    entries: list[Entry], sequestered: Manifest, tmp_path: Path
) -> None:
    platform = site(tmp_path)
    catalog.freeze(platform.engine, platform.store, platform.settings, sequestered)
    good = change_control(sequestered, **EASY)
    altered = good.model_copy(
        update={
            "data": good.data.model_copy(
                update={
                    "sequestered_test": good.data.sequestered_test.model_copy(
                        update={"sha256": "0" * 64}
                    )
                }
            )
        }
    )
    with pytest.raises(SequesteredMismatch, match=sequestered.sha256):
        govern(altered, platform.store, platform.settings)

    own = TrainerSettings(model_name="planes", workdir=tmp_path / "work")
    with pytest.raises(Rejected, match=r"not the 0{64}"):  # the Kafka door: dead-lettered
        Trainer(platform, own, PlanFile.fixed(altered)).handle(
            record(training_pb2.TrainingRequested())
        )
    with pytest.raises(Rejected, match="does not train 'other'"):
        Trainer(platform, own, PlanFile.fixed(good)).handle(
            record(training_pb2.TrainingRequested(model_name="other"))
        )
    # A snapshot named by id is held to the same rules: this one holds the sequestered set.
    everything = catalog.freeze(
        platform.engine,
        platform.store,
        platform.settings,
        snapshot("planes", entries, Filters(), SplitSpec(seed=0)),
    )
    with pytest.raises(Rejected, match=f"{len(sequestered.entries)} sequestered image"):
        Trainer(platform, own, PlanFile.fixed(good)).handle(
            record(training_pb2.TrainingRequested(snapshot_id=everything.id))
        )
    # And whatever door a run comes through, it never trains on the sequestered set.
    governance = govern(good, platform.store, platform.settings)
    with pytest.raises(ValueError, match=r"holds .* images of the sequestered test set"):
        run_on_platform(
            platform, everything, never, request(), tmp_path / "work", False, governance
        )
    with session_scope(platform.engine) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0


def test_a_plan_for_another_model_stops_the_service_at_start(tmp_path: Path) -> None:
    other = tmp_path / "plan.yaml"
    other.write_text(PLAN_FILE.read_text().replace("model: fetal-planes", "model: other"))
    with pytest.raises(PlanForAnotherModel, match="governs the model 'other'"):
        governing_plan(other, "fetal-planes")
    settings = Settings(store_dir=tmp_path / "objects", database_url="sqlite://")
    with pytest.raises(SystemExit, match="governs the model 'other'"):
        build(settings, TrainerSettings(plan=other))
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [")
    with pytest.raises(SystemExit, match=r"FETALMLOPS_TRAINER_PLAN: (?s:.*)broken.yaml"):
        build(settings, TrainerSettings(plan=broken))


def test_a_plan_written_after_the_start_governs_from_the_first_request(
    sequestered: Manifest, tmp_path: Path
) -> None:
    """A platform starts before the sequestered set it will fix exists: until the plan is
    written, a request is refused with the reason; then the plan is read, and kept."""
    platform = site(tmp_path)
    catalog.freeze(platform.engine, platform.store, platform.settings, sequestered)
    later = tmp_path / "plan.yaml"
    own = TrainerSettings(model_name="planes", workdir=tmp_path / "work", plan=later)
    trainer = Trainer(platform, own, plan_file(later, own.model_name))
    with pytest.raises(
        Rejected, match=r"no change-control plan (?s:.*)plan.yaml(?s:.*)cannot be read"
    ):
        trainer.governance(training_pb2.TrainingRequested())
    plan = change_control(sequestered, **EASY)
    later.write_text(yaml.safe_dump(plan.model_dump(mode="json")))
    governance = trainer.governance(training_pb2.TrainingRequested())
    assert governance is not None and governance.digest == plan_digest(plan)
    later.write_text(PLAN_FILE.read_text())  # a running service never changes plans
    assert trainer.governance(training_pb2.TrainingRequested()).digest == plan_digest(plan)  # type: ignore[union-attr]


def record(event: training_pb2.TrainingRequested) -> Record:
    headers = ((SCHEMA_HEADER, schema_name(event).encode()),)
    return Record("fetal.training.requested", 0, 0, "r", event.SerializeToString(), headers)


def test_the_command_freezes_the_sequestered_set_a_plan_names_and_train_checks_it(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/catalog.db"
    upgrade(url)
    with session_scope(create_engine_for(url)) as session:
        for p in range(30):
            for i in range(3):
                image = f"img-{p:02d}-{i}"
                session.add(
                    Image(id=image, sha256=f"{p:02d}{i}".ljust(64, "0"), object_key=image,
                          canonical_key=f"canonical/{image}.png", rows=2, columns=2,
                          patient_pseudonym=f"FM{p:04d}", cohort="site",
                          device_manufacturer="Sonora Systems", device_model="Sonora X9")
                )  # fmt: skip
                plane = CLASSES[(p + i) % len(CLASSES)]
                session.add_all([Label(image_id=image, plane=plane, annotator=a) for a in "ab"])
    env = {
        "FETALMLOPS_DATABASE_URL": url,
        "FETALMLOPS_STORE_DIR": str(tmp_path / "objects"),
        "FETALMLOPS_TRAINER_WORKDIR": str(tmp_path / "work"),
    }
    app = typer.Typer()
    app.add_typer(snapshots, name="snapshot")
    app.command("train")(train_command)

    made = CliRunner().invoke(
        app, ["snapshot", "sequester", "--share", "0.2", "--seed", "1"], env=env
    )

    assert made.exit_code == 0, made.output
    printed = yaml.safe_load(made.output)  # the lines a plan's data.sequestered_test takes
    settings = Settings(database_url=url, store_dir=tmp_path / "objects")
    held = catalog.load_snapshot(LocalStore(settings.store_dir), settings, printed["snapshot_id"])
    assert held.sha256 == printed["sha256"] and set(held.assignment.values()) == {"test"}
    patients = {e.patient for e in held.entries}
    assert len(held.entries) == 3 * len(patients) == 18  # whole patients, a fifth of them
    assert {e.segment for e in held.entries} == {"Sonora Systems/Sonora X9"}

    plan_file = tmp_path / "plan.yaml"
    document = yaml.safe_load(PLAN_FILE.read_text())
    document["data"]["sequestered_test"] = {**printed, "sha256": "f" * 64}
    plan_file.write_text(yaml.safe_dump(document))
    refused = CliRunner().invoke(app, ["train", "--plan", str(plan_file), "--no-progress"], env=env)
    assert refused.exit_code == 2 and printed["sha256"] in refused.output
    document["model"] = "other"
    plan_file.write_text(yaml.safe_dump(document))
    other = CliRunner().invoke(app, ["train", "--plan", str(plan_file)], env=env)
    assert other.exit_code == 2 and "governs the model 'other'" in other.output
