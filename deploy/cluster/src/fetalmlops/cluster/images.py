"""The project's container images, built with buildah from the package registries alone.

No container registry is reached: the base image is Debian bookworm made with ``debootstrap``
from the machine's own apt mirror, imported into buildah from a tarball, and every Dockerfile
builds ``FROM`` it (``--pull=never``). Trainer and inference start from one torch base image, so
torch and its CUDA libraries are stored once. buildah's storage is ``<cache>/cluster/containers``;
its ``--layers`` cache makes a second build of an unchanged tree take well under a minute (uv's
cache, a build cache mount, keeps a changed tree's rebuild to seconds too), and after each build
the untagged images are removed: a torch image's earlier build would keep a gigabyte or more,
and the node's disk is the cluster's too. Each image's build log is
``<cache>/logs/image-<name>.log``.

``python -m fetalmlops.cluster.images`` (``make images``) builds them all and prints their sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.cluster.builds import KSERVE_VERSION
from fetalmlops.cluster.torch_requirements import locked_version, torch_requirements
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import require_executable, run_logged

# crun, buildah's default runtime, refuses the hybrid cgroup v1 hierarchy of these machines.
RUNTIME = "/usr/sbin/runc"
BUILDAH_HINT = "`apt-get install -y buildah runc` (Debian 12)."
DEBOOTSTRAP_HINT = "`apt-get install -y debootstrap` (Debian 12)."
CTR_HINT = "`apt-get install -y containerd` (Debian 12)."
# Where HTTPS goes through an intercepting proxy, the proxy's CA is only in the host's bundle;
# the Dockerfiles read it as the build secret `ca-bundle` and build without it elsewhere.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
FALLBACK_MIRROR = "http://deb.debian.org/debian"

REGISTRY = "localhost/fetalmlops"  # the chart's `image.registry` for these images
DEBIAN_SUITE = "bookworm"
DEBIAN_BASE = f"{REGISTRY}/debian-base:{DEBIAN_SUITE}"
# bookworm's python3 is CPython 3.11, the version python:3.11-slim-bookworm carries; the
# Dockerfiles need `python3` and its venv module on either base.
DEBIAN_PACKAGES = ("python3", "python3-venv")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT_ENV = ("--env", "DEBIAN_FRONTEND=noninteractive")
UPGRADE = (
    "sh",
    "-c",
    "apt-get update && apt-get -y upgrade && apt-get clean && rm -rf /var/lib/apt/lists/*",
)
TORCH_BASE_DIR = Path("deploy/images/torch-base")
# KServe's storage initializer (Docker Hub's `kserve/storage-initializer`), from PyPI's
# kserve-storage at the controller's version: `cluster up` names it in KServe's chart values.
STORAGE_INITIALIZER_DIR = Path("deploy/images/storage-initializer")
KSERVE_STORAGE_REPOSITORY = "localhost/kserve-storage-initializer"
KSERVE_STORAGE_IMAGE = f"{KSERVE_STORAGE_REPOSITORY}:{KSERVE_VERSION}"


@dataclass(frozen=True)
class ServiceImage:
    """A service's image: ``services/<name>/Dockerfile`` built from the repository root."""

    name: str
    torch: bool = False  # starts from the torch base instead of the plain base

    @property
    def dockerfile(self) -> Path:
        return Path("services") / self.name / "Dockerfile"

    def tag(self, repository: Path) -> str:
        """``localhost/fetalmlops/<name>:<version>``: the chart's image for its appVersion."""
        with (repository / "services" / self.name / "pyproject.toml").open("rb") as file:
            version = tomllib.load(file)["project"]["version"]
        return f"{REGISTRY}/{self.name}:{version}"

    def build_args(self, base: str, torch_base: str) -> dict[str, str]:
        return {"TORCH_BASE_IMAGE": torch_base} if self.torch else {"BASE_IMAGE": base}


SERVICES = (
    ServiceImage("ingest"),
    ServiceImage("anonymizer"),
    ServiceImage("trainer", torch=True),
    ServiceImage("inference", torch=True),
    ServiceImage("monitor"),
)


class Buildah:
    """buildah with the project's own storage under ``<cache>/cluster/containers``.

    Every command this class runs holds ``buildah.lock`` there, so that two processes (a build
    and the cluster importing an image) never use the storage at once: buildah 1.28 processes
    that start and stop side by side race on the storage's own bind mount, leave a container's
    overlay mounted beneath it, and every later command then fails with EBUSY.
    """

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.storage = cache / "cluster" / "containers" / "storage"
        self.runroot = cache / "cluster" / "containers" / "run"
        self.logs = cache / "logs"
        self._lock = cache / "cluster" / "containers" / "buildah.lock"
        self._held = 0  # re-entered by this object: debian_base() inspects while it holds it

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the storage for this process (waiting for another one to finish with it)."""
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        with self._lock.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._held = 1
            try:
                yield
            finally:
                self._held = 0
                fcntl.flock(lock, fcntl.LOCK_UN)

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.storage),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            *args,
        ]

    def build_command(
        self,
        tag: str,
        context: Path,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        ca_bundle: Path | None = HOST_CA_BUNDLE,
    ) -> list[str]:
        """``bud …``: the arguments of one build, after ``buildah`` and the storage options."""
        args = [
            "bud",
            "--runtime",
            RUNTIME,
            # RUN steps reach PyPI and the apt mirror the way the host does.
            "--network",
            "host",
            "--layers",
            "--pull=never",  # every FROM is an image built here; never ask a registry
            # The Docker format keeps HEALTHCHECK, which the OCI image config has no field for.
            "--format",
            "docker",
            "--tag",
            tag,
        ]
        for name, value in sorted((build_args or {}).items()):
            args += ["--build-arg", f"{name}={value}"]
        if ca_bundle is not None and ca_bundle.is_file():
            args += ["--secret", f"id=ca-bundle,src={ca_bundle}"]
        if dockerfile is not None:
            args += ["--file", str(dockerfile)]
        return [*args, str(context)]

    def build(
        self,
        tag: str,
        context: Path,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
    ) -> None:
        log = self.logs / f"image-{image_name(tag)}.log"
        log.unlink(missing_ok=True)
        self.run_logged(
            self.build_command(tag, context, dockerfile, build_args), log, f"building {tag}"
        )

    def exists(self, tag: str) -> bool:
        result = self._inspect_result(tag)
        if result.returncode == 0:
            return True
        if "image not known" in result.stderr:
            return False
        # A storage that cannot answer must not read as "absent": the base would be rebuilt.
        raise StackError(f"`buildah inspect {tag}` failed in {self.storage}: {result.stderr}")

    def image_id(self, tag: str) -> str:
        return str(self._inspect(tag)["FromImageID"])

    def layers(self, tag: str) -> list[tuple[str, int]]:
        """The image's layers as (digest, uncompressed size in bytes), base first."""
        return manifest_layers(json.loads(str(self._inspect(tag)["Manifest"])))

    def size(self, tag: str) -> int:
        return sum(size for _, size in self.layers(tag))

    def tag(self, image: str, *names: str) -> None:
        """More names for ``image`` (e.g. the reference Tilt expects)."""
        self.run_logged(["tag", image, *names], self.logs / f"image-{image_name(image)}.log",
                        f"tagging {image}")  # fmt: skip

    def names(self) -> list[str]:
        """Every image name in the storage (``localhost/fetalmlops/ingest:0.1.0``)."""
        require_executable("buildah", BUILDAH_HINT)
        with self.locked():
            listed = subprocess.run(self.command("images", "--format", "{{.Name}}:{{.Tag}}"),
                                    capture_output=True, text=True, check=True)  # fmt: skip
        return [name for name in listed.stdout.split() if not name.endswith(":<none>")]

    def untag(self, names: Collection[str]) -> None:
        """Removes ``names``; an image goes with its last name (its layers with their last
        image)."""
        if names:
            self.run_logged(["rmi", *names], self.logs / "image-prune.log", "removing old names")

    def run_logged(self, args: list[str], log: Path, what: str) -> None:
        """``buildah <args>`` with its output appended to ``log``, holding the storage."""
        require_executable("buildah", BUILDAH_HINT)
        with self.locked():
            run_logged(self.command(*args), log, what=what)

    def _inspect_result(self, tag: str) -> subprocess.CompletedProcess[str]:
        require_executable("buildah", BUILDAH_HINT)
        with self.locked():
            return subprocess.run(
                self.command("inspect", "--type", "image", tag),
                capture_output=True,
                text=True,
                check=False,
            )

    def _inspect(self, tag: str) -> dict[str, object]:
        result = self._inspect_result(tag)
        if result.returncode != 0:
            raise StackError(f"image {tag} is not in {self.storage}: `make images` builds it")
        inspected: dict[str, object] = json.loads(result.stdout)
        return inspected


def image_name(tag: str) -> str:
    """``localhost/fetalmlops/ingest:0.1.0`` → ``ingest``: the name its files are kept under."""
    return tag.rsplit("/", 1)[-1].split(":", 1)[0]


def manifest_layers(manifest: Mapping[str, object]) -> list[tuple[str, int]]:
    layers = manifest["layers"]
    assert isinstance(layers, list)
    return [(str(layer["digest"]), int(layer["size"])) for layer in layers]


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} GB"


def debian_mirrors(sources: Iterable[str]) -> tuple[str, str | None]:
    """The Debian archive and security mirrors named in apt's sources (one-line or deb822)."""
    urls = [url.rstrip("/") for text in sources for url in re.findall(r"https?://\S+", text)]
    archive = next((url for url in urls if url.endswith("/debian")), FALLBACK_MIRROR)
    security = next((url for url in urls if url.endswith("/debian-security")), None)
    return archive, security


def apt_sources_list(archive: str, security: str | None) -> str:
    """The base image's sources: the release, its updates and, where reachable, security."""
    lines = [
        f"deb {archive} {DEBIAN_SUITE} main",
        f"deb {archive} {DEBIAN_SUITE}-updates main",
    ]
    if security is not None:
        lines.append(f"deb {security} {DEBIAN_SUITE}-security main")
    return "\n".join(lines) + "\n"


def read_apt_sources() -> list[str]:
    texts = []
    for source in APT_SOURCES:
        files = sorted(source.glob("*")) if source.is_dir() else [source]
        texts += [file.read_text(errors="replace") for file in files if file.is_file()]
    return texts


def repository_root() -> Path:
    """The source tree this package is installed from (editable): the Dockerfiles' context."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "uv.lock").is_file() and (folder / "services").is_dir():
            return folder
    raise StackError("the images are built from the source tree: run from the repository's .venv")


def debian_base(buildah: Buildah, cache: Path) -> str:
    """Debian bookworm with python3, made once with debootstrap from the machine's apt mirror:
    the stand-in for python:3.11-slim-bookworm where no container registry is reachable."""
    with buildah.locked():  # one process makes it; the others find it made
        if not buildah.exists(DEBIAN_BASE):
            make_debian_base(buildah, cache / "cluster" / "rootfs")
    return DEBIAN_BASE


def make_debian_base(buildah: Buildah, work: Path) -> None:
    debootstrap = require_executable("debootstrap", DEBOOTSTRAP_HINT)
    archive, security = debian_mirrors(read_apt_sources())
    rootfs, tarball = work / "debian-base", work / "debian-base.tar"
    log = buildah.logs / "image-debian-base.log"
    log.unlink(missing_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    include = f"--include={','.join(DEBIAN_PACKAGES)}"
    run_logged(
        [debootstrap, "--variant=minbase", include, DEBIAN_SUITE, str(rootfs), archive],
        log,
        what=f"debootstrap of Debian {DEBIAN_SUITE} from {archive}",
    )
    (rootfs / "etc" / "apt" / "sources.list").write_text(apt_sources_list(archive, security))
    for package in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        package.unlink()
    run_logged(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], log, what="packing the rootfs")
    container = "fetalmlops-debian-base"
    subprocess.run(buildah.command("rm", container), capture_output=True, check=False)
    steps = [
        ["from", "--name", container, "scratch"],
        ["add", container, str(tarball), "/"],
        # The point release debootstrap installs, brought up to date with its security fixes.
        ["run", "--runtime", RUNTIME, "--network", "host", *APT_ENV, container, "--", *UPGRADE],
        ["config", "--cmd", "python3", "--env", f"PATH={PATH}", "--env", "LANG=C.UTF-8", container],
        ["commit", "--rm", "--format", "docker", container, DEBIAN_BASE],
    ]
    for step in steps:
        buildah.run_logged(step, log, what=f"making {DEBIAN_BASE} (buildah {step[0]})")
    shutil.rmtree(rootfs)
    tarball.unlink()


def torch_base(buildah: Buildah, repository: Path, base: str) -> str:
    """``localhost/fetalmlops/torch-base:<torch version>``, refused when its requirements are
    older than uv.lock (the service builds would then install torch a second time)."""
    context = repository / TORCH_BASE_DIR
    if (context / "requirements.txt").read_text() != torch_requirements(repository):
        raise StackError(
            f"{context / 'requirements.txt'} is older than uv.lock: "
            "`.venv/bin/python -m fetalmlops.cluster.images --torch-requirements` rewrites it"
        )
    with (repository / "uv.lock").open("rb") as file:
        tag = f"{REGISTRY}/torch-base:{locked_version(tomllib.load(file), 'torch')}"
    buildah.build(tag, context, build_args={"BASE_IMAGE": base})
    return tag


def service_images(
    buildah: Buildah,
    cache: Path,
    repository: Path | None = None,
    only: Collection[str] | None = None,
) -> dict[str, str]:
    """Builds the base, the torch base, every service's image (or those ``only`` names) and
    KServe's storage initializer (not with ``only``); prints each one's size and build time.
    Returns the service (or ``storage-initializer``) → image tag: what the chart runs."""
    repository = repository or repository_root()
    unknown = set(only or ()) - {service.name for service in SERVICES}
    if unknown:
        raise StackError(f"no image for {', '.join(sorted(unknown))}: one of the services")
    started = time.monotonic()
    base = debian_base(buildah, cache)
    report(buildah, base, None, started)
    wanted = [s for s in SERVICES if only is None or s.name in only]
    torch = ""
    if any(service.torch for service in wanted):
        started = time.monotonic()
        torch = torch_base(buildah, repository, base)
        report(buildah, torch, base, started)
    tags = {}
    for service in wanted:
        started = time.monotonic()
        tag = service.tag(repository)
        buildah.build(
            tag, repository, repository / service.dockerfile, service.build_args(base, torch)
        )
        report(buildah, tag, torch if service.torch else base, started)
        tags[service.name] = tag
    if only is None:
        started = time.monotonic()
        context = repository / STORAGE_INITIALIZER_DIR
        buildah.build(KSERVE_STORAGE_IMAGE, context, build_args={"BASE_IMAGE": base})
        report(buildah, KSERVE_STORAGE_IMAGE, base, started)
        tags["storage-initializer"] = KSERVE_STORAGE_IMAGE
    buildah.run_logged(["rmi", "--prune"], buildah.logs / "image-prune.log", "pruning")
    return tags


def report(buildah: Buildah, tag: str, parent: str | None, started: float) -> None:
    layers = buildah.layers(tag)
    inherited = {digest for digest, _ in buildah.layers(parent)} if parent else set()
    own = sum(size for digest, size in layers if digest not in inherited)
    total = sum(size for _, size in layers)
    over = f" ({human_size(own)} over {image_name(parent)})" if parent else ""
    print(
        f"{tag:<42} {human_size(total):>9}{over:<28} {time.monotonic() - started:6.1f} s",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fetalmlops.cluster.images",
        description="Build every image with buildah, from the package registries alone.",
    )
    parser.add_argument(
        "--torch-requirements",
        action="store_true",
        help=f"rewrite {TORCH_BASE_DIR}/requirements.txt from uv.lock, and build nothing",
    )
    args = parser.parse_args(argv)
    try:
        repository = repository_root()
        if args.torch_requirements:
            target = repository / TORCH_BASE_DIR / "requirements.txt"
            target.write_text(torch_requirements(repository))
            print(f"wrote {target}")
            return 0
        cache = StackConfig().cache
        buildah = Buildah(cache)
        started = time.monotonic()
        service_images(buildah, cache, repository)
    except StackError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"every image built in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
