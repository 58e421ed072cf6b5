"""The project's images in the cluster: each built image imported into the node's containerd,
again only when it changed since it was last imported.

containerd knows an image by its tag, which a rebuild keeps, so the Buildah image id of each
import is kept beside the cluster (``imported/<name>.id``, which `down` keeps, as it keeps the
images). The docker-archive an import reads is deleted after it: a torch image's is gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fetalmlops.cluster.images import Buildah, image_name, load_into_containerd
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.scratch import in_containerd
from fetalmlops.stack.component import Progress


def stamp(layout: Layout, tag: str) -> Path:
    return layout.root / "imported" / f"{image_name(tag)}.id"


def imported(layout: Layout, tags: Iterable[str], progress: Progress) -> list[str]:
    """Imports each of ``tags`` that containerd lacks or holds an older build of; returns those
    imported."""
    buildah = Buildah(layout.cache)
    done = []
    for tag in tags:
        image_id = buildah.image_id(tag)
        kept = stamp(layout, tag)
        if in_containerd(layout.containerd_socket, tag) and (
            kept.exists() and kept.read_text() == image_id
        ):
            continue
        progress(f"importing {tag} into the node's containerd")
        archive = buildah.archive(tag)
        load_into_containerd(archive, layout.containerd_socket)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(image_id)
        archive.unlink(missing_ok=True)
        archive.with_suffix(".id").unlink(missing_ok=True)
        done.append(tag)
    return done
