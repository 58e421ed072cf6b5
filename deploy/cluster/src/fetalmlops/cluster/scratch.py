"""Images FROM scratch around one static binary: the pod sandbox, CoreDNS, the KServe controller.

No registry is reachable, so the cluster's own images are built here (Buildah) and copied into
containerd's `k8s.io` namespace (`registry.py`), where the kubelet finds them
(`imagePullPolicy: Never` or `IfNotPresent`). containerd keeps them across `down`, so a second
`up` builds nothing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.cluster.builds import COREDNS_VERSION, KSERVE_VERSION, Binaries
from fetalmlops.cluster.configs import PAUSE_IMAGE, scratch_dockerfile
from fetalmlops.cluster.images import Buildah
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.registry import containerd_names, copy_to_containerd, running_registry
from fetalmlops.stack.component import Progress

COREDNS_IMAGE = f"localhost/coredns:{COREDNS_VERSION}"
KSERVE_CONTROLLER_REPOSITORY = "localhost/kserve-controller"
KSERVE_CONTROLLER_IMAGE = f"{KSERVE_CONTROLLER_REPOSITORY}:{KSERVE_VERSION}"


@dataclass(frozen=True)
class ScratchImage:
    tag: str
    binary: Path
    entrypoint: str  # the binary's name inside the image
    user: str | None = None

    def dockerfile(self) -> str:
        return scratch_dockerfile(self.entrypoint, self.user)


def pause_image(binaries: Binaries) -> ScratchImage:
    # 65535: the pause process needs no privilege at all (as upstream's image).
    return ScratchImage(PAUSE_IMAGE, binaries.pause, "pause", "65535:65535")


def coredns_image(binaries: Binaries) -> ScratchImage:
    return ScratchImage(COREDNS_IMAGE, binaries.coredns, "coredns")


def kserve_controller_image(binaries: Binaries) -> ScratchImage:
    # 65532 as upstream's distroless image: the chart's securityContext runs it as non-root.
    return ScratchImage(KSERVE_CONTROLLER_IMAGE, binaries.kserve_manager, "manager", "65532:65532")


def provide(layout: Layout, image: ScratchImage, progress: Progress) -> None:
    """Builds ``image`` unless Buildah has it, and imports it unless containerd has it."""
    if image.tag in containerd_names(layout.containerd_socket):
        return
    buildah = Buildah(layout.cache)
    if not buildah.exists(image.tag):
        progress(f"building image {image.tag}")
        context = layout.image_contexts / image.entrypoint
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        shutil.copy2(image.binary, context / image.entrypoint)
        (context / "Dockerfile").write_text(image.dockerfile())
        buildah.build(image.tag, context)
        shutil.rmtree(context)  # a copy of a binary in bin/, needed only for the build
    progress(f"copying image {image.tag} into containerd")
    with running_registry(layout) as registry:
        copy_to_containerd(buildah, image.tag, registry, layout.containerd_socket)
