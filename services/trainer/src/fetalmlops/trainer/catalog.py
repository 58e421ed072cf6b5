"""Snapshots in and out of the platform: read the catalog, freeze a manifest, read it back.

The catalog's labelled images, read through the anonymizer's read interface
(`fetalmlops.common.db.catalog`), become snapshot entries (several annotators: the majority
reading); the manifest goes to
`fetal-datasets/snapshots/<id>.json`, written once (same id, same bytes), and a
`dataset_snapshots` row names it with its content hash. Under a change-control plan a fresh
snapshot holds only what the plan's data rules let train (`data_rules.DataRules`).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from fetalmlops.common.db import DatasetSnapshot, session_scope
from fetalmlops.common.db.catalog import labelled_images
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectNotFound, ObjectStore
from fetalmlops.trainer.data_rules import Catalogued, DataRules
from fetalmlops.trainer.snapshots import (
    Entry,
    Filters,
    Manifest,
    SplitSpec,
    majority_plane,
    snapshot,
)

PREFIX = "snapshots/"


class UnknownSnapshot(LookupError):
    pass


def labelled_entries(engine: Engine, settings: Settings) -> list[Entry]:
    """Every labelled image of the catalog (its read interface), with the majority reading."""
    return [entry for entry, _ in labelled_readings(engine, settings)]


def labelled_readings(engine: Engine, settings: Settings) -> list[Catalogued]:
    """Every labelled image as an entry (the majority reading) with every annotator's reading:
    what a change-control plan's agreement rule is checked on."""
    catalogued: list[Catalogued] = []
    for image in labelled_images(engine):
        readings = tuple(plane.value for plane in image.readings)
        entry = Entry(
            image_id=image.image_id,
            plane=majority_plane(readings),
            source=f"{settings.buckets.anonymized}/{image.canonical_key}",
            patient=image.patient,
            cohort=image.cohort,
            device=image.device,
            created_at=image.created_at.isoformat(),
        )
        catalogued.append((entry, readings))
    return catalogued


def take_snapshot(
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    filters: Filters,
    spec: SplitSpec,
    rules: DataRules | None = None,
) -> Manifest:
    """A fresh snapshot of the catalog, frozen; under a plan's ``rules``, only what they let
    train, with the record of what they left out."""
    catalogued = labelled_readings(engine, settings)
    if rules is None:
        manifest = snapshot(name, [entry for entry, _ in catalogued], filters, spec)
    else:
        manifest = rules.snapshot(name, catalogued, filters, spec)
    return freeze(engine, store, settings, manifest)


def freeze(engine: Engine, store: ObjectStore, settings: Settings, manifest: Manifest) -> Manifest:
    """The manifest in `fetal-datasets` and its row (both once: the id is the content's)."""
    bucket, key = settings.buckets.datasets, f"{PREFIX}{manifest.id}.json"
    store.put(
        bucket, key, manifest.content(), content_type="application/json", sha256=manifest.sha256
    )
    with session_scope(engine) as session:
        if session.get(DatasetSnapshot, manifest.id) is None:
            session.add(
                DatasetSnapshot(
                    id=manifest.id,
                    name=manifest.name,
                    manifest_uri=f"s3://{bucket}/{key}",
                    content_sha256=manifest.sha256,
                    filters=manifest.filters.to_dict(),
                    split=manifest.spec.to_dict(),
                    split_seed=manifest.spec.seed,
                    counts=manifest.counts(),
                )
            )
    return manifest


def load_snapshot(store: ObjectStore, settings: Settings, snapshot_id: str) -> Manifest:
    try:
        content = store.get(settings.buckets.datasets, f"{PREFIX}{snapshot_id}.json")
    except ObjectNotFound:
        raise UnknownSnapshot(f"no snapshot {snapshot_id} in {settings.buckets.datasets}") from None
    manifest = Manifest.parse(content)
    if manifest.id != snapshot_id:
        raise ValueError(f"snapshot {snapshot_id} does not match its content ({manifest.id})")
    return manifest


def store_loader(store: ObjectStore) -> Callable[[Entry], Callable[[], bytes]]:
    """How an entry's picture is read: `bucket/key` from the object store."""

    def loader(entry: Entry) -> Callable[[], bytes]:
        bucket, key = entry.source.split("/", 1)
        return lambda: store.get(bucket, key)

    return loader
