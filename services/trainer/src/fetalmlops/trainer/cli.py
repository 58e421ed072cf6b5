"""`fetalmlops train` and `fetalmlops snapshot`: the trainer from a shell or a Kubernetes Job.

Two ways in. On the platform (`--snapshot ID`, or a fresh snapshot of the catalog): the
version goes to `fetal-models`, the registry and the gate, as a Job would do it. Outside it
(`--dataset PATH --out DIR`): any dataset the readers know, trained on this machine, written to
DIR in the KServe layout; nothing else is touched.

Under a change-control plan (`--plan`, or `FETALMLOPS_TRAINER_PLAN`) a platform run keeps the
plan's data rules and is judged by its gate; `fetalmlops snapshot sequester` makes the
sequestered test set such a plan names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from fetalmlops.common.clients import connect
from fetalmlops.common.db.session import create_engine_for
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectStore, open_store
from fetalmlops.datasets.readers import DatasetError, DatasetFormat
from fetalmlops.trainer import catalog, local
from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.data_rules import sequester
from fetalmlops.trainer.governance import Governance, govern, governing_plan
from fetalmlops.trainer.job import Request, fit_and_package
from fetalmlops.trainer.platform import Platform, download, run_on_platform
from fetalmlops.trainer.requests import manifest_for, request_for
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import Entry, Filters, Manifest, SplitSpec, snapshot
from fetalmlops.trainer.training import TrainConfig

snapshots = typer.Typer(no_args_is_help=True, help="Dataset snapshots of the catalog.")


@snapshots.command("create")
def create_snapshot(
    name: Annotated[str, typer.Option(help="What the snapshot is for.")] = "planes",
    cohort: Annotated[list[str] | None, typer.Option(help="Keep only these cohorts.")] = None,
    device: Annotated[list[str] | None, typer.Option(help="Keep only these devices.")] = None,
    folds: Annotated[int, typer.Option(help="k-fold instead of train/val/test (0: off).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the patient-level split.")] = 0,
) -> None:
    """Freeze the labelled catalog into a patient-level split in fetal-datasets."""
    settings = Settings(service_name="trainer")
    spec = SplitSpec(method="kfold", folds=folds, seed=seed) if folds else SplitSpec(seed=seed)
    filters = Filters(cohorts=tuple(cohort or ()), devices=tuple(device or ()))
    manifest = catalog.take_snapshot(
        create_engine_for(settings.database_url),
        open_store(settings),
        settings,
        name,
        filters,
        spec,
    )
    typer.echo(f"{manifest.id}  {json.dumps(manifest.counts())}")


@snapshots.command("sequester")
def sequester_snapshot(
    name: Annotated[str, typer.Option(help="What the snapshot is for.")] = "sequestered",
    share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Of the labelled images, by patient.")
    ] = 0.2,
    cohort: Annotated[list[str] | None, typer.Option(help="Draw only from these cohorts.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the patient-level draw.")] = 0,
) -> None:
    """Freeze a sequestered test set: a seeded, patient-level, class-stratified share of the
    labelled catalog, every image in split "test". Prints the id and content sha256 a
    change-control plan's `data.sequestered_test` names."""
    settings = Settings(service_name="trainer")
    engine, store = create_engine_for(settings.database_url), open_store(settings)
    filters = Filters(cohorts=tuple(cohort or ()))
    try:
        manifest = sequester(name, catalog.labelled_entries(engine, settings), share, seed, filters)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    catalog.freeze(engine, store, settings, manifest)
    patients, planes = len({e.group for e in manifest.entries}), manifest.counts()["test"]
    typer.echo(f"snapshot_id: {manifest.id}")
    typer.echo(f"sha256: {manifest.sha256}")
    typer.echo(f"# {len(manifest.entries)} images of {patients} patients: {json.dumps(planes)}")


def train_command(
    snapshot_id: Annotated[
        str | None, typer.Option("--snapshot", help="Train on this snapshot of the catalog.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Train on a dataset on disk instead (needs --out).")
    ] = None,
    format: Annotated[DatasetFormat | None, typer.Option(help="Its format (detected).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the version here (KServe layout).")
    ] = None,
    backbone: Annotated[str, typer.Option(help="tiny, resnet18, efficientnet_b0, …")] = "tiny",
    strategy: Annotated[Strategy, typer.Option(help="Fine-tune all or probe a frozen encoder.")] = (
        Strategy.FINE_TUNE
    ),
    weights: Annotated[
        str | None, typer.Option(help="Pretrained encoder: a local file or s3://bucket/key.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: Annotated[float, typer.Option(min=0)] = 1e-3,
    input_size: Annotated[int | None, typer.Option(help="Default: the backbone's.")] = None,
    patience: Annotated[int, typer.Option(min=1)] = 5,
    seed: Annotated[int, typer.Option()] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Data-loading processes.")] = 0,
    cohort: Annotated[
        list[str] | None, typer.Option(help="A fresh snapshot keeps only these cohorts.")
    ] = None,
    ood_cohort: Annotated[
        list[str] | None, typer.Option(help="Held out and scored as out-of-domain.")
    ] = None,
    fold: Annotated[
        int, typer.Option(min=0, help="Of a k-fold snapshot: the fold to validate on.")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="The model's change-control plan (default: FETALMLOPS_TRAINER_PLAN): its data "
            "rules and its gate instead of promotion."
        ),
    ] = None,
) -> None:
    """Train, evaluate, package; on the platform also register, gate and announce."""
    if dataset is not None and out is None:
        raise typer.BadParameter("--dataset needs --out DIR", param_hint="--out")
    if dataset is not None and snapshot_id is not None:
        raise typer.BadParameter("give --snapshot or --dataset, not both")
    if dataset is not None and plan is not None:
        raise typer.BadParameter(
            "a change-control plan governs versions on the platform, not a --dataset run",
            param_hint="--plan",
        )
    own, settings = TrainerSettings(), Settings(service_name="trainer")
    plan = plan or own.plan
    try:
        governing = governing_plan(plan, own.model_name) if plan and dataset is None else None
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    store = None if dataset is not None else open_store(settings)
    config = TrainConfig(
        backbone=backbone, strategy=strategy, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, input_size=input_size, patience=patience, seed=seed,
        num_workers=workers, weights=fetch_weights(weights, store, own.workdir),
    )  # fmt: skip
    held_out = tuple(ood_cohort or ())
    try:
        if dataset is not None and out is not None:
            source = local.dataset_entries(dataset, format)
            request = request_for(own, config, source, held_out, fold=fold)
            train_locally(dataset.name, source, request, out, own, settings, progress)
        elif store is not None:
            platform = Platform.of(settings, connect(settings))
            governance = govern(governing, store, settings) if governing else None
            entries = catalog.labelled_entries(platform.engine, settings)
            manifest = manifest_for(
                platform.engine, store, settings, snapshot_id, cohort or (), held_out, seed,
                governance.rules() if governance else None,
            )  # fmt: skip
            request = request_for(own, config, entries, held_out, fold=fold)
            train_on_platform(platform, manifest, request, own, out, progress, governance)
    except (DatasetError, ValueError, LookupError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def train_locally(
    name: str,
    entries: list[Entry],
    request: Request,
    out: Path,
    own: TrainerSettings,
    settings: Settings,
    progress: bool,
) -> None:
    """A dataset on disk to a version in ``out``; no platform is touched."""
    held_out = tuple(request.out_of_domain)
    manifest = local_snapshot(name, entries, held_out, request.config.seed)
    packaged = fit_and_package(
        manifest, local.file_loader, request, 1, own.workdir / "local" / manifest.id, progress,
        models_bucket=settings.buckets.models,
    )  # fmt: skip
    shutil.copytree(packaged.directory, out, dirs_exist_ok=True)
    typer.echo(f"{out}: {headline(packaged.metrics)}")


def train_on_platform(
    platform: Platform,
    manifest: Manifest,
    request: Request,
    own: TrainerSettings,
    out: Path | None,
    progress: bool,
    governance: Governance | None = None,
) -> None:
    """A snapshot to a registered, gated, announced version (copied to ``out`` if given)."""
    loader = catalog.store_loader(platform.store)
    version, decision = run_on_platform(
        platform, manifest, loader, request, own.workdir, progress, governance
    )
    typer.echo(
        f"{version.model_name} v{version.version} {version.stage}: {decision.summary()}; "
        f"{version.storage_uri}; {headline(version.metrics)}"
    )
    if out is not None:
        download(platform, version.model_name, version.version, out)


def local_snapshot(
    name: str, entries: list[Entry], held_out: tuple[str, ...], seed: int
) -> Manifest:
    """The dataset's own split when every image has train, val (and test) ones, else a
    patient-level hold-out (FETAL_PLANES_DB names only train and test: no validation set)."""
    filters = Filters(exclude_cohorts=held_out)
    kept = [e for e in entries if filters.admits(e)]
    given = {e.given_split for e in kept}
    if kept and all(e.given_split for e in kept) and given >= {"train", "val"}:
        return snapshot(name, kept, filters, SplitSpec(method="given", seed=seed))
    return snapshot(name, kept, filters, SplitSpec(seed=seed))


def fetch_weights(uri: str | None, store: ObjectStore | None, workdir: Path) -> Path | None:
    """A local path as it is; an `s3://bucket/key` copied into the work directory once."""
    if uri is None:
        return None
    if not uri.startswith("s3://"):
        return Path(uri)
    if store is None:
        raise typer.BadParameter(
            "s3:// weights need the platform's object store", param_hint="--weights"
        )
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    target = workdir / "weights" / bucket / key
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(bucket, key))
    return target


def headline(metrics: dict[str, object]) -> str:
    shown = ("val_macro_f1", "test_macro_f1", "val_ece")
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in shown if isinstance(metrics.get(k), float))
