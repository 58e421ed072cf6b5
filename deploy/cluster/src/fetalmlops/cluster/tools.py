"""Pinned command-line tools built with `go install` into the cache: Helm and kubeconform.

Each is built once per version into ``<cache>/bin/<name>-<version>`` and reused; a build's
output goes to ``<cache>/logs/build-<name>.log``.
"""

from __future__ import annotations

import shutil
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

    def path(self, cache: Path) -> Path:
        return cache / "bin" / f"{self.name}-{self.version}"

    def ensure(self, cache: Path) -> Path:
        """The built binary, built first when this version is not in the cache yet."""
        binary = self.path(cache)
        if binary.exists():
            return binary
        go = require_executable("go", GO_HINT)
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


HELM_VERSION = "v3.21.4"
HELM = GoTool(
    "helm",
    "helm.sh/helm/v3/cmd/helm",
    HELM_VERSION,
    f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
)
KUBECONFORM = GoTool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0")
