"""Snapshots in and out of the platform: read the catalog, freeze a manifest, read it back.

The catalog's labelled images become snapshot entries (several annotators: the majority
reading; a label may name any raw copy of an image, and an annotator who labelled two copies
of one image counts once, by the reading written last); the manifest goes to
`fetal-datasets/snapshots/<id>.json`, written once (same id, same bytes), and a
`dataset_snapshots` row names it with its content hash.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, func, select

from fetalmlops.common.db import DatasetSnapshot, Image, ImageCopy, Label, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectNotFound, ObjectStore
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
    """Every catalogued image with at least one label and a canonical picture."""
    # The image a label names: through the copy its raw sha256 became (a label may arrive
    # before its copy, and a second copy of an instance is no image of its own).
    image_id = func.coalesce(ImageCopy.image_id, Label.image_id)
    labels = (
        select(image_id, Label.annotator, Label.plane)
        .outerjoin(ImageCopy, ImageCopy.copy_id == Label.image_id)
        .order_by(Label.id)
    )
    with session_scope(engine) as session:
        latest: dict[tuple[str, str], str] = {}
        for image, annotator, plane in session.execute(labels):
            latest[(image, annotator)] = plane.value
        readings: dict[str, list[str]] = {}
        for (image, _), reading in latest.items():
            readings.setdefault(image, []).append(reading)
        images = session.scalars(select(Image).where(Image.id.in_(readings))).all()
        return [
            Entry(
                image_id=image.id,
                plane=majority_plane(readings[image.id]),
                source=f"{settings.buckets.anonymized}/{image.canonical_key}",
                patient=image.patient_pseudonym or "",
                cohort=image.cohort or "",
                device="/".join(filter(None, (image.device_manufacturer, image.device_model))),
                created_at=image.created_at.isoformat(),
            )
            for image in images
            if image.canonical_key
        ]


def take_snapshot(
    engine: Engine,
    store: ObjectStore,
    settings: Settings,
    name: str,
    filters: Filters,
    spec: SplitSpec,
) -> Manifest:
    return freeze(
        engine, store, settings, snapshot(name, labelled_entries(engine, settings), filters, spec)
    )


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
