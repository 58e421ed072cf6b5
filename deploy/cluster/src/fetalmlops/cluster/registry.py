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
import subprocess
import time
from collections.abc import Iterator
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


def copy_to_containerd(buildah: Buildah, tag: str, registry: str, socket_path: Path) -> None:
    """``tag`` from buildah into containerd's `k8s.io` namespace (where the kubelet's CRI finds
    it, pods using `imagePullPolicy: Never`) under the same name."""
    at = remote(registry, tag)
    buildah.run_logged(
        ["push", "--quiet", "--disable-compression", "--tls-verify=false", tag, f"docker://{at}"],
        buildah.logs / f"image-{image_name(tag)}-push.log",
        f"pushing {tag}",
    )
    ctr = [require_executable("ctr", CTR_HINT), "-a", str(socket_path), "-n", "k8s.io", "images"]
    for args in (["pull", "--plain-http", at], ["tag", "--force", at, tag], ["rm", at]):
        result = subprocess.run([*ctr, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"`ctr images {args[0]}` of {tag} failed: {result.stderr.strip()}")
