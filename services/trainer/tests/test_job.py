"""A whole training run, embedded: a phantom dataset on disk → a packaged, registered version.

The platform here is the embedded one (directory store, in-process bus, SQLite); the same run
on the real stack is in tests/integration/test_training_end_to_end.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from fetalmlops.archive.handler import PlaneClassifier
from fetalmlops.archive.packaging import read_mar
from fetalmlops.archive.preprocessing import decode
from fetalmlops.archive.servable import background_indices
from fetalmlops.common.bus import EmbeddedBus, read_event
from fetalmlops.common.db import ModelStage, ModelVersion, create_engine_for, session_scope, upgrade
from fetalmlops.common.model_version import ARCHIVE_FORMAT, FORMAT_FILE
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.trainer import local
from fetalmlops.trainer.cli import local_snapshot, train_command
from fetalmlops.trainer.job import BACKGROUND_SIZE, Request, fit_and_package
from fetalmlops.trainer.platform import Platform, run_on_platform
from fetalmlops.trainer.registry import Gate
from fetalmlops.trainer.snapshots import CLASSES, Entry, Filters, Manifest, SplitSpec, snapshot
from fetalmlops.trainer.training import TrainConfig
from fetalmlops.v1 import models_pb2

CONFIG = TrainConfig(epochs=3, patience=3, input_size=64, batch_size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate(out, plan(18, seed=12), seed=12, fmt=OutputFormat.PNG)
    return out


@pytest.fixture(scope="module")
def entries(dataset: Path) -> list[Entry]:
    return local.dataset_entries(dataset)


@pytest.fixture(scope="module")
def manifest(entries: list[Entry]) -> Manifest:
    return local_snapshot("phantom", entries, ("portable",), seed=0)


def request(entries: list[Entry], name: str = "planes") -> Request:
    portable = [e for e in entries if e.cohort == "portable"]
    # Three epochs teach little: the gate's floors are test_registry's business.
    gate = Gate(min_macro_f1=0.0, min_class_recall=0.0)
    return Request(name, CONFIG, gate, out_of_domain={"portable": portable}, synthetic=True)


def test_a_run_writes_a_complete_version(
    manifest: Manifest, entries: list[Entry], tmp_path: Path
) -> None:
    packaged = fit_and_package(
        manifest,
        local.file_loader,
        request(entries),
        4,
        tmp_path,
        False,
        models_bucket="site-models",
    )

    root = packaged.directory
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert files == {
        "model-store/planes.mar", "config/config.properties", "model-card.md", "metrics.json",
        "drift_reference.json", "confusion_matrix.png", "reliability.png",
    }  # fmt: skip
    archive = read_mar(root / "model-store" / "planes.mar")
    assert json.loads(archive["MAR-INF/MANIFEST.json"])["model"]["modelVersion"] == "4"
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(packaged.metrics))
    assert {"val_macro_f1", "test_macro_f1", "ood_portable_macro_f1", "temperature"} <= set(metrics)
    assert metrics["efficiency"]["parameters"] > 0
    assert packaged.footprint is not None and packaged.footprint.energy_kwh > 0
    assert json.loads(archive[FORMAT_FILE]) == {"format": ARCHIVE_FORMAT}
    card = (root / "model-card.md").read_text()
    assert manifest.id in card and "portable" in card
    assert "storageUri: s3://site-models/planes/v4/" in card  # the configured bucket
    assert packaged.drift_reference["classes"] == list(CLASSES)


def test_the_archive_serves_the_calibrated_model(
    manifest: Manifest, entries: list[Entry], tmp_path: Path
) -> None:
    packaged = fit_and_package(
        manifest,
        local.file_loader,
        request(entries),
        1,
        tmp_path,
        False,
        models_bucket="fetal-models",
    )
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for name, content in read_mar(packaged.directory / "model-store" / "planes.mar").items():
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_bytes(content)
    classifier = PlaneClassifier.load(unpacked, torch.device("cpu"))
    val = manifest.split("val")
    answers = classifier.answer([local.file_loader(e)() for e in val])
    accuracy = sum(a["label"] == e.plane for a, e in zip(answers, val, strict=True)) / len(val)
    assert accuracy == pytest.approx(packaged.metrics["val_accuracy"], abs=1e-9)

    # Live traffic is embedded as the drift reference was.
    images = torch.stack([decode(local.file_loader(e)(), classifier.preprocessing) for e in val])
    _, embeddings = classifier.scores(images)
    assert embeddings is not None
    np.testing.assert_allclose(
        embeddings.numpy().mean(0), packaged.drift_reference["embedding"]["mean"], atol=1e-5
    )
    # SHAP's background: validation images of every class, preprocessed as served.
    labels = [CLASSES.index(e.plane) for e in val]
    chosen = background_indices(labels, BACKGROUND_SIZE, CONFIG.seed)
    assert classifier.background is not None
    assert torch.equal(classifier.background, images[chosen])
    assert len(chosen) == min(BACKGROUND_SIZE, len(val))
    assert {labels[i] for i in chosen} == set(labels)


def test_on_the_platform_a_version_is_registered_promoted_and_announced_once(
    manifest: Manifest, entries: list[Entry], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    platform = Platform(settings, store, EmbeddedBus(partitions=1), create_engine_for(url))
    version, decision = run_on_platform(
        platform, manifest, local.file_loader, request(entries), tmp_path / "work", False
    )

    assert decision.promote and version.stage is ModelStage.PRODUCTION
    assert version.recipe == request(entries).config.to_dict() and version.parent_version is None
    keys = {info.key for info in store.list(settings.buckets.models, "planes/v1/")}
    assert (
        "planes/v1/model-store/planes.mar" in keys and "planes/v1/config/config.properties" in keys
    )

    def never(entry: Entry) -> Callable[[], bytes]:
        raise AssertionError("a finished run must not train again")

    again, _ = run_on_platform(
        platform, manifest, never, request(entries), tmp_path / "work", False
    )
    assert again.version == version.version
    with session_scope(platform.engine) as session:
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    subscription = platform.bus.subscribe(
        [settings.topics.models_trained, settings.topics.models_promoted], "test"
    )
    announced = [read_event(r) for r in subscription.poll(0.1)]
    promoted = [e for e in announced if isinstance(e, models_pb2.ModelPromoted)]
    assert promoted and all(e.version == 1 and e.previous_version == 0 for e in promoted)
    trained = [e for e in announced if isinstance(e, models_pb2.ModelTrained)]
    assert trained[0].metrics["val_macro_f1"] == pytest.approx(version.metrics["val_macro_f1"])


def test_the_command_trains_a_dataset_on_disk(dataset: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(train_command)
    env = {"FETALMLOPS_TRAINER_WORKDIR": str(tmp_path / "work")}
    arguments = ["--dataset", str(dataset), "--out", str(tmp_path / "out"), "--epochs", "2",
                 "--input-size", "64", "--ood-cohort", "portable", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, arguments, env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model-store" / "fetal-planes.mar").exists()
    assert "val_macro_f1" in result.output

    refused = CliRunner().invoke(app, ["--dataset", str(dataset)], env=env)
    assert refused.exit_code == 2 and "--out" in refused.output


def test_a_k_fold_snapshot_trains_on_the_folds_it_is_told(
    entries: list[Entry], tmp_path: Path
) -> None:
    folds = snapshot("folds", entries, Filters(), SplitSpec(method="kfold", folds=3))
    one = replace(request(entries), fold=1, out_of_domain={})
    packaged = fit_and_package(
        folds, local.file_loader, one, 1, tmp_path, False, models_bucket="fetal-models"
    )

    assert packaged.metrics["validation"]["n"] == len(folds.fold(1)[1])
    assert "test_macro_f1" not in packaged.metrics
    with pytest.raises(ValueError, match="fold 3 of a 3-fold snapshot"):
        fit_and_package(
            folds,
            local.file_loader,
            replace(one, fold=3),
            1,
            tmp_path,
            False,
            models_bucket="fetal-models",
        )
