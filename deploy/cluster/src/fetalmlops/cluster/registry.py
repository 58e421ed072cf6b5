"""Images from buildah's storage into the node's containerd, through a registry on loopback.

Importing a docker-archive writes and reads every layer each time: two minutes for a torch image
whose own layer is one of its seven gigabytes. A registry between the two moves only what
changed: `buildah push` skips the blobs the registry holds (pushed uncompressed, a layer's digest
is its diff id, which buildah knows without reading the layer), and `ctr pull` skips the blobs
containerd holds. The registry is CNCF Distribution's, pinned and built with `go install`; it
runs only while images move, always on the same loopback port (buildah remembers which blobs a
registry holds by its address: at a new one, it would compress every layer again to find out),
and its storage
(``<cache>/cluster/registry``) is kept between imports, its untagged manifests and their blobs
collected after each.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from fetalmlops.cluster.components import Probe, answers
from fetalmlops.cluster.images import CTR_HINT, Buildah, image_name
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.tools import GoTool
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import require_executable, run_logged

REGISTRY = GoTool("registry", "github.com/distribution/distribution/v3/cmd/registry", "v3.1.2")
PORT = 19500
START_TIMEOUT_S = 30.0
CONTENT_REF = "containerd.io/gc.ref.content."  # a blob's label naming a blob it refers to
# What buildah pushes: OCI manifests, or Docker's v2 schema 2 with `--format docker`.
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def config(storage: Path, port: int) -> dict[str, Any]:
    """The registry's configuration: loopback only, blobs on disk, deletes allowed (for the
    garbage collection of untagged manifests)."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }


def remote(registry: str, tag: str) -> str:
    """``localhost/fetalmlops/ingest:0.1.0`` as ``<registry>/fetalmlops/ingest:0.1.0``."""
    return f"{registry}/{tag.split('/', 1)[1]}"


def repository(tag: str) -> str:
    """``localhost/fetalmlops/ingest:0.1.0`` → ``localhost/fetalmlops/ingest``."""
    return tag.rsplit(":", 1)[0]


def superseded(names: Iterable[str], kept: Collection[str]) -> list[str]:
    """The names among ``names`` that belong to a repository of ``kept`` but are not kept: the
    builds an import replaced (Tilt names every build anew, so each run would leave its images
    in Buildah, the registry and containerd)."""
    repositories = {repository(tag) for tag in kept}
    return sorted({name for name in names if repository(name) in repositories} - set(kept))


def registry_tags(registry: str, repositories: Iterable[str]) -> list[str]:
    """The tags the registry at ``registry`` holds in ``repositories``, as local names."""
    names = []
    for name in repositories:
        try:
            with _request(f"http://{registry}/v2/{_path(name)}/tags/list") as answer:
                tags = json.load(answer).get("tags") or []
        except urllib.error.HTTPError as error:
            if error.code != 404:  # 404: a repository never pushed
                raise
            tags = []
        names += [f"{name}:{tag}" for tag in tags]
    return names


def untag_in_registry(registry: str, names: Iterable[str], kept: Iterable[str]) -> None:
    """Deletes the manifests of ``names`` from the registry, except one that a kept name also
    points at (a manifest is deleted by digest, with every tag on it); the garbage collection
    after the import then frees the layers no tag holds."""
    keep = {_digest(registry, tag) for tag in kept}
    for name in names:
        digest = _digest(registry, name)
        if digest and digest not in keep:
            url = f"http://{registry}/v2/{_path(repository(name))}/manifests/{digest}"
            with _request(url, "DELETE"):
                pass


def _digest(registry: str, name: str) -> str | None:
    url = f"http://{registry}/v2/{_path(repository(name))}/manifests/{name.rsplit(':', 1)[1]}"
    try:
        with _request(url, "HEAD") as answer:
            digest: str | None = answer.headers.get("Docker-Content-Digest")
            return digest
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def _path(repository: str) -> str:
    """``localhost/fetalmlops/ingest`` → ``fetalmlops/ingest``: its path in the registry."""
    return repository.split("/", 1)[1]


def _request(url: str, method: str = "GET") -> Any:
    """The registry's API, on loopback: never through a proxy from the environment."""
    headers = {"Accept": MANIFEST_TYPES}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 (http://127.0.0.1)
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30)


@contextlib.contextmanager
def running_registry(layout: Layout) -> Iterator[str]:
    """A registry for the block's duration; yields its address (``127.0.0.1:<port>``). One
    process at a time holds it (Tilt builds several images at once, each copying its own)."""
    lock = layout.run / "registry.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with _registry(layout) as address:
            yield address


@contextlib.contextmanager
def _registry(layout: Layout) -> Iterator[str]:
    binary, port = REGISTRY.ensure(layout.cache), PORT
    path = layout.conf / "registry.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config(layout.root / "registry", port)))
    log = layout.logs / "registry.log"
    with log.open("a") as output:
        server = subprocess.Popen([str(binary), "serve", str(path)], stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(Probe(f"http://127.0.0.1:{port}/v2/")):
            if server.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"the image registry did not start: see {log}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    run_logged([str(binary), "garbage-collect", "--delete-untagged", str(path)], log,
               what="collecting the registry's untagged images")  # fmt: skip


def containerd_names(socket_path: Path) -> list[str]:
    """The image names in containerd's `k8s.io` namespace."""
    result = subprocess.run([*_ctr(socket_path), "images", "ls", "-q"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    return result.stdout.split()


def untag_in_containerd(socket_path: Path, names: Collection[str]) -> None:
    """Removes ``names`` from containerd, and the image-id names (``sha256:<config>``) that the
    kubelet's CRI gave the images no name holds any more: containerd then collects the content
    and snapshots nothing refers to (a running container keeps its own)."""
    if names:
        _ctr_run(socket_path, "images", "rm", *names)
    images = _ctr_run(socket_path, "images", "ls")
    orphans = orphaned_ids(images, _ctr_run(socket_path, "content", "ls"))
    if orphans:
        _ctr_run(socket_path, "images", "rm", *orphans)


def orphaned_ids(images: str, content: str) -> list[str]:
    """From `ctr images ls` and `ctr content ls`: the ``sha256:<id>`` image names whose id no
    other image reaches (its manifest's config, through the blobs' ``gc.ref.content`` labels)."""
    targets: list[tuple[str, str]] = []
    ids: list[tuple[str, str]] = []
    for line in images.splitlines()[1:]:
        name, _, digest, *_ = line.split()
        (ids if name.startswith("sha256:") else targets).append((name, digest))
    children: dict[str, list[str]] = {}
    for line in content.splitlines()[1:]:
        digest, labels = line.split()[0], line.split()[-1].split(",")
        refs = [label for label in labels if label.startswith(CONTENT_REF)]
        children[digest] = [label.split("=", 1)[1] for label in refs]
    reached: set[str] = set()
    pending = [digest for _, digest in targets]
    while pending:
        digest = pending.pop()
        if digest not in reached:
            reached.add(digest)
            pending += children.get(digest, [])
    return sorted(name for name, _ in ids if name not in reached)


def _ctr_run(socket_path: Path, *args: str) -> str:
    result = subprocess.run([*_ctr(socket_path), *args], capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"`ctr {' '.join(args[:2])}` failed: {result.stderr.strip()}")
    return result.stdout


def _ctr(socket_path: Path) -> list[str]:
    return [require_executable("ctr", CTR_HINT), "-a", str(socket_path), "-n", "k8s.io"]


def copy_to_containerd(buildah: Buildah, tag: str, registry: str, socket_path: Path) -> None:
    """``tag`` from buildah into containerd's `k8s.io` namespace (where the kubelet's CRI finds
    it, pods using `imagePullPolicy: Never`) under the same name."""
    at = remote(registry, tag)
    buildah.run_logged(
        ["push", "--quiet", "--disable-compression", "--tls-verify=false", tag, f"docker://{at}"],
        buildah.logs / f"image-{image_name(tag)}-push.log",
        f"pushing {tag}",
    )
    for args in (["pull", "--plain-http", at], ["tag", "--force", at, tag], ["rm", at]):
        _ctr_run(socket_path, "images", *args)
