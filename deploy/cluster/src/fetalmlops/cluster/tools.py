"""Pinned command-line tools built with Go into the cache: Helm, kubeconform and Tilt.

Each is built once per version into ``<cache>/bin/<name>-<version>`` and reused; a build's
output goes to ``<cache>/logs/build-<name>.log``. Most install plainly (`go install
<package>@<version>`). Tilt cannot: its go.mod replaces modules (which `go install` refuses),
the module proxy answers 403 to its version list (which `go install` reads for deprecations),
its module zip keeps `vendor/modules.txt` without the vendored code, and its tree-sitter
parser needs cgo. So it is built inside a copy of its own module: downloaded at the pinned
version, the empty vendor folder removed, `go build -mod=mod` with cgo. Its web UI is built
with Node at release and is not in the module: a one-page stand-in is embedded instead (Tilt
refuses to start without an index.html), and the terminal, `tilt ci` and the API work as ever.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.stack.minio import GO_HINT
from fetalmlops.stack.process import require_executable, run_logged


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # what `go install` builds
    version: str
    ldflags: str = "-s -w"
    module: str = ""  # set: built inside a copy of this module, at ``version`` (see above)
    files: tuple[tuple[str, str], ...] = ()  # (path, text) written into that copy first

    def path(self, cache: Path) -> Path:
        return cache / "bin" / f"{self.name}-{self.version}"

    def ensure(self, cache: Path) -> Path:
        """The built binary, built first when this version is not in the cache yet."""
        binary = self.path(cache)
        if binary.exists():
            return binary
        go = require_executable("go", GO_HINT)
        if self.module:
            return self._build_in_module(go, cache, binary)
        gobin = binary.parent / f".gobin-{self.name}-{self.version}"
        shutil.rmtree(gobin, ignore_errors=True)
        run_logged(
            [go, "install", "-ldflags", self.ldflags, f"{self.package}@{self.version}"],
            cache / "logs" / f"build-{self.name}.log",
            what=f"building {self.name} {self.version} with `go install`",
            env={"GOBIN": str(gobin), "CGO_ENABLED": "0"},
        )
        (gobin / Path(self.package).name).rename(binary)
        shutil.rmtree(gobin, ignore_errors=True)
        return binary

    def _build_in_module(self, go: str, cache: Path, binary: Path) -> Path:
        log = cache / "logs" / f"build-{self.name}.log"
        downloaded = subprocess.run(
            [go, "mod", "download", "-json", f"{self.module}@{self.version}"],
            capture_output=True, text=True, check=True, cwd=cache,
        )  # fmt: skip
        source = binary.parent / f".src-{self.name}-{self.version}"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(json.loads(downloaded.stdout)["Dir"], source)
        for path in [source, *source.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
        shutil.rmtree(source / "vendor", ignore_errors=True)
        for relative, text in self.files:
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).write_text(text)
        partial = binary.with_suffix(".partial")
        run_logged(
            [go, "-C", str(source), "build", "-mod=mod", "-ldflags", self.ldflags,
             "-o", str(partial), "./" + self.package.removeprefix(self.module).strip("/")],
            log, what=f"building {self.name} {self.version} in its own module",
            env={"CGO_ENABLED": "1"},
        )  # fmt: skip
        partial.rename(binary)
        shutil.rmtree(source, ignore_errors=True)
        return binary


HELM_VERSION = "v3.21.4"
HELM = GoTool(
    "helm",
    "helm.sh/helm/v3/cmd/helm",
    HELM_VERSION,
    f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
)
KUBECONFORM = GoTool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0")
TILT_VERSION = "v0.34.0"
TILT = GoTool(
    "tilt",
    "github.com/tilt-dev/tilt/cmd/tilt",
    TILT_VERSION,
    f"-s -w -X main.version={TILT_VERSION.removeprefix('v')}",
    module="github.com/tilt-dev/tilt",
    files=(
        (
            "pkg/assets/build/index.html",
            "<!doctype html><title>Tilt</title><p>This Tilt was built from its Go module, "
            "without its web UI: use the terminal (`tilt up --stream`, `tilt get`, `tilt logs`).",
        ),
    ),
)
