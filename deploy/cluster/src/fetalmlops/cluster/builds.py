"""The cluster's binaries, built from the Go module proxy into the cache once per version.

Kubernetes, etcd and KServe cannot be `go install`ed: their go.mod files hold `replace`
directives (Kubernetes points its 31 staging modules at `./staging/...`). Each is built from a
small wrapper module that requires the pinned version and replaces what its go.mod replaces by
published versions. CoreDNS installs plainly. Every build writes to a temporary folder renamed
into place at the end, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.cluster.layout import Layout
from fetalmlops.stack.component import Progress
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.minio import GO_HINT
from fetalmlops.stack.process import require_executable, run_logged

# 1.34 is the last minor that runs on cgroup v1 by default and on containerd 1.x (Debian 12's).
KUBERNETES_VERSION = "v1.34.4"
# The staging modules (k8s.io/api, k8s.io/client-go, ...) are published as v0.<minor>.<patch>.
STAGING_VERSION = "v0.34.4"
ETCD_VERSION = "v3.6.16"
COREDNS_VERSION = "v1.14.7"
KSERVE_VERSION = "v0.16.0"
# kserve's own go.mod replaces controller-runtime by this version.
KSERVE_CONTROLLER_RUNTIME = "v0.19.7"

KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# etcd's server module replaces its sibling modules by `../`; these are their published names.
ETCD_SIBLINGS = (
    "go.etcd.io/etcd/api/v3",
    "go.etcd.io/etcd/client/pkg/v3",
    "go.etcd.io/etcd/client/v3",
    "go.etcd.io/etcd/pkg/v3",
)
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
PAUSE_SOURCE = Path("build/pause/linux/pause.c")

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)


# --- pure: the wrapper modules -----------------------------------------------------------------
def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules Kubernetes' go.mod replaces by its own `./staging/...` folders."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def wrapper_go_mod(
    module: str, go: str, require: tuple[str, str], replace: Sequence[tuple[str, str]]
) -> str:
    """A go.mod requiring one module and replacing others by published versions of themselves."""
    lines = [f"module {module}", "", f"go {go}", "", f"require {require[0]} {require[1]}", ""]
    if replace:
        lines.append("replace (")
        lines += [f"\t{path} => {path} {version}" for path, version in replace]
        lines.append(")")
    return "\n".join(lines) + "\n"


def kubernetes_go_mod(kubernetes_go_mod_text: str) -> str:
    staging = staging_modules(kubernetes_go_mod_text)
    return wrapper_go_mod(
        "local/kubernetes",
        "1.24.0",
        ("k8s.io/kubernetes", KUBERNETES_VERSION),
        [(m, STAGING_VERSION) for m in staging],
    )


def etcd_go_mod() -> str:
    return wrapper_go_mod(
        "local/etcd",
        "1.24",
        ("go.etcd.io/etcd/server/v3", ETCD_VERSION),
        [(m, ETCD_VERSION) for m in ETCD_SIBLINGS],
    )


def kserve_go_mod() -> str:
    return wrapper_go_mod(
        "local/kserve",
        "1.24.1",
        ("github.com/kserve/kserve", KSERVE_VERSION),
        [("sigs.k8s.io/controller-runtime", KSERVE_CONTROLLER_RUNTIME)],
    )


def kubernetes_ldflags(build_date: str) -> str:
    """Real version strings: without them `kubectl version` says v0.0.0 and Helm charts'
    `kubeVersion` constraints fail."""
    minor = KUBERNETES_VERSION.split(".")[1]
    flags = ["-s", "-w"]
    for package in VERSION_PACKAGES:
        for key, value in (
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", "1"),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("gitCommit", "0" * 40),
            ("buildDate", build_date),
        ):
            flags.append(f"-X {package}.{key}={value}")
    return " ".join(flags)


# --- the shell: go, gcc ------------------------------------------------------------------------
@dataclass(frozen=True)
class Binaries:
    """Where each built binary is; a path exists only once its build has finished."""

    layout: Layout

    @property
    def kubernetes(self) -> Path:
        return self.layout.bin / f"kubernetes-{KUBERNETES_VERSION}"

    def kube(self, command: str) -> Path:
        return self.kubernetes / command

    @property
    def etcd(self) -> Path:
        return self.layout.bin / f"etcd-{ETCD_VERSION}"

    @property
    def coredns(self) -> Path:
        return self.layout.bin / f"coredns-{COREDNS_VERSION}"

    @property
    def kserve_manager(self) -> Path:
        return self.layout.bin / f"kserve-manager-{KSERVE_VERSION}"

    @property
    def pause(self) -> Path:
        return self.layout.bin / f"pause-{KUBERNETES_VERSION}"

    def module_dir(self, path: str, version: str) -> Path:
        """A module's unpacked source in our module cache (after it has been downloaded)."""
        escaped = re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path)
        return self.layout.go_mod_cache / f"{escaped}@{version}"

    @property
    def kserve_charts(self) -> Path:
        return self.module_dir("github.com/kserve/kserve", KSERVE_VERSION) / "charts"


class GoBuilder:
    """Runs `go` with the module and build caches under the cluster's folder."""

    def __init__(self, layout: Layout, progress: Progress) -> None:
        self.layout = layout
        self.binaries = Binaries(layout)
        self.progress = progress

    def env(self) -> dict[str, str]:
        return {
            "GOPATH": str(self.layout.go),
            "GOMODCACHE": str(self.layout.go_mod_cache),
            "GOCACHE": str(self.layout.go_build_cache),
            # -modcacherw: the module cache can be deleted with a plain `rm -rf`.
            "GOFLAGS": "-buildvcs=false -modcacherw",
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
        }

    def log(self, name: str) -> Path:
        return self.layout.build_logs / f"build-{name}.log"

    def _go(self, name: str, args: Sequence[str], what: str, cwd: Path | None = None) -> None:
        go = require_executable("go", GO_HINT)
        # run_logged takes no cwd; `go -C dir` runs in the wrapper module's folder.
        where = ["-C", str(cwd)] if cwd is not None else []
        run_logged([go, *where, *args], self.log(name), what=what, env=self.env())

    def download(self, name: str, path: str, version: str) -> Path:
        """Fetches one module into the module cache; returns its source folder."""
        self.layout.builds.mkdir(parents=True, exist_ok=True)
        self._go(name, ["mod", "download", f"{path}@{version}"], f"downloading {path}@{version}",
                 self.layout.builds)  # fmt: skip
        folder = self.binaries.module_dir(path, version)
        if not folder.is_dir():
            raise StackError(f"{path}@{version} was downloaded but {folder} is missing")
        return folder

    def wrapper(
        self,
        name: str,
        go_mod: str,
        packages: Sequence[str],
        output: Path,
        *,
        version: str,
        ldflags: str = "-s -w",
    ) -> None:
        """Builds ``packages`` of a wrapper module into ``output`` (a folder when several)."""
        folder = self.layout.builds / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "go.mod").write_text(go_mod)
        (folder / "go.sum").unlink(missing_ok=True)
        # The exact version matters: a bare `go get` upgrades to the newest release and fails.
        self._go(name, ["get", *(f"{p}@{version}" for p in packages)],
                 f"resolving {name}'s modules", folder)  # fmt: skip
        partial = output.with_name(output.name + ".partial")
        _remove(partial)
        if len(packages) > 1:
            partial.mkdir(parents=True)
        target = f"{partial}/" if len(packages) > 1 else str(partial)
        self._go(name, ["build", "-trimpath", "-ldflags", ldflags, "-o", target, *packages],
                 f"building {name}", folder)  # fmt: skip
        partial.rename(output)

    def install(self, name: str, package: str, version: str, output: Path) -> None:
        """`go install package@version` into ``output`` (a module without replaces)."""
        go = require_executable("go", GO_HINT)
        gobin = output.with_name(output.name + ".gobin")
        _remove(gobin)
        run_logged([go, "install", "-ldflags", "-s -w", f"{package}@{version}"], self.log(name),
                   what=f"building {name} with `go install`",
                   env={**self.env(), "GOBIN": str(gobin)})  # fmt: skip
        (gobin / Path(package).name).rename(output)
        _remove(gobin)

    def timed(self, what: str, name: str) -> _Timer:
        return _Timer(self.progress, what, self.log(name))


class _Timer:
    def __init__(self, progress: Progress, what: str, log: Path) -> None:
        self.progress, self.what, self.log = progress, what, log

    def __enter__(self) -> None:
        self.began = time.monotonic()
        self.progress(f"building {self.what} (minutes the first time; log: {self.log})")

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.progress(f"built {self.what} in {time.monotonic() - self.began:.0f} s")


def ensure_kubernetes(builder: GoBuilder) -> None:
    out = builder.binaries.kubernetes
    if out.is_dir():
        return
    with builder.timed(f"Kubernetes {KUBERNETES_VERSION}", "kubernetes"):
        source = builder.download("kubernetes", "k8s.io/kubernetes", KUBERNETES_VERSION)
        builder.wrapper(
            "kubernetes",
            kubernetes_go_mod((source / "go.mod").read_text()),
            [f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS],
            out,
            version=KUBERNETES_VERSION,
            ldflags=kubernetes_ldflags(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        )


def ensure_pause(builder: GoBuilder) -> None:
    """The pod sandbox's one process, from Kubernetes' own pause.c, static so it needs no libc."""
    out = builder.binaries.pause
    if out.exists():
        return
    gcc = require_executable("gcc", "`apt-get install -y gcc libc6-dev`")
    source = builder.download("kubernetes", "k8s.io/kubernetes", KUBERNETES_VERSION)
    partial = out.with_name(out.name + ".partial")
    run_logged([gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={KUBERNETES_VERSION}-local",
                "-s", "-o", str(partial), str(source / PAUSE_SOURCE)],
               builder.log("pause"), what="compiling pause.c")  # fmt: skip
    partial.rename(out)


def ensure_etcd(builder: GoBuilder) -> None:
    out = builder.binaries.etcd
    if out.exists():
        return
    with builder.timed(f"etcd {ETCD_VERSION}", "etcd"):
        builder.wrapper("etcd", etcd_go_mod(), ["go.etcd.io/etcd/server/v3"], out,
                        version=ETCD_VERSION)  # fmt: skip


def ensure_coredns(builder: GoBuilder) -> None:
    out = builder.binaries.coredns
    if out.exists():
        return
    with builder.timed(f"CoreDNS {COREDNS_VERSION}", "coredns"):
        builder.install("coredns", "github.com/coredns/coredns", COREDNS_VERSION, out)


def ensure_kserve_manager(builder: GoBuilder) -> None:
    out = builder.binaries.kserve_manager
    if out.exists():
        return
    with builder.timed(f"the KServe controller {KSERVE_VERSION}", "kserve"):
        builder.wrapper("kserve", kserve_go_mod(), ["github.com/kserve/kserve/cmd/manager"], out,
                        version=KSERVE_VERSION)  # fmt: skip


def build_all(layout: Layout, progress: Progress, *, kserve: bool = True) -> Binaries:
    """Every binary the cluster runs, built when missing; a no-op once they are all there."""
    layout.bin.mkdir(parents=True, exist_ok=True)
    builder = GoBuilder(layout, progress)
    ensure_kubernetes(builder)
    ensure_pause(builder)
    ensure_etcd(builder)
    ensure_coredns(builder)
    if kserve:
        ensure_kserve_manager(builder)
    return builder.binaries


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
