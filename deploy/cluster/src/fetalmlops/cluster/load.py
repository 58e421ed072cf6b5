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
from fetalmlops.cluster.registry import copy_to_containerd, running_registry
from fetalmlops.cluster.scratch import in_containerd
from fetalmlops.stack.component import Progress


def stamp(layout: Layout, tag: str) -> Path:
    return layout.root / "imported" / f"{image_name(tag)}.id"


def imported(layout: Layout, tags: Iterable[str], progress: Progress) -> list[str]:
    """Copies each of ``tags`` that containerd lacks or holds an older build of; returns those
    copied."""
    buildah = Buildah(layout.cache)
    changed = []
    for tag in tags:
        kept = stamp(layout, tag)
        image_id = buildah.image_id(tag)
        current = kept.exists() and kept.read_text() == image_id
        if not (current and in_containerd(layout.containerd_socket, tag)):
            changed.append((tag, image_id))
    if not changed:
        return []
    with running_registry(layout) as registry:
        for tag, image_id in changed:
            progress(f"copying {tag} into the node's containerd")
            copy_to_containerd(buildah, tag, registry, layout.containerd_socket)
            stamp(layout, tag).parent.mkdir(parents=True, exist_ok=True)
            stamp(layout, tag).write_text(image_id)
    return [tag for tag, _ in changed]
