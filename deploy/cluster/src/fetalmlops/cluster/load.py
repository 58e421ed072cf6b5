"""The project's images in the cluster: each built image copied into the node's containerd,
again only when it changed since it was last copied.

containerd knows an image by its tag, which a rebuild keeps, so the Buildah image id of each
copy is kept beside the cluster (``imported/<name>.id``, which `down` keeps, as it keeps the
images). The copies go through a registry on loopback (`registry.py`), which moves only the
layers containerd lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fetalmlops.cluster.images import Buildah, image_name
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.registry import (
    containerd_names,
    copy_to_containerd,
    registry_tags,
    repository,
    running_registry,
    superseded,
    untag_in_containerd,
    untag_in_registry,
)
from fetalmlops.stack.component import Progress


def stamp(layout: Layout, tag: str) -> Path:
    return layout.root / "imported" / f"{image_name(tag)}.id"


def imported(layout: Layout, tags: Iterable[str], progress: Progress) -> list[str]:
    """Copies each of ``tags`` that containerd lacks or holds an older build of, then retires
    the other names of their repositories; returns the tags copied."""
    buildah, tags = Buildah(layout.cache), list(tags)
    held = containerd_names(layout.containerd_socket)
    changed = []
    for tag in tags:
        kept = stamp(layout, tag)
        image_id = buildah.image_id(tag)
        current = kept.exists() and kept.read_text() == image_id
        if not (current and tag in held):
            changed.append((tag, image_id))
    if not changed:
        return []
    with running_registry(layout) as registry:
        for tag, image_id in changed:
            progress(f"copying {tag} into the node's containerd")
            copy_to_containerd(buildah, tag, registry, layout.containerd_socket)
            stamp(layout, tag).parent.mkdir(parents=True, exist_ok=True)
            stamp(layout, tag).write_text(image_id)
        retire(layout, buildah, registry, tags)
    return [tag for tag, _ in changed]


def retire(layout: Layout, buildah: Buildah, registry: str, kept: list[str]) -> None:
    """Removes the names of ``kept``'s repositories other than ``kept`` from containerd, the
    registry and Buildah: each then frees what no name holds (the registry in its garbage
    collection after the import). One build of each image stays, however often Tilt built it."""
    socket = layout.containerd_socket
    untag_in_containerd(socket, superseded(containerd_names(socket), kept))
    repositories = {repository(tag) for tag in kept}
    untag_in_registry(registry, superseded(registry_tags(registry, repositories), kept), kept)
    buildah.untag(superseded(buildah.names(), kept))
