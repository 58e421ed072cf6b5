"""kubectl as the cluster's administrator: apply manifests, wait for things, read state."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fetalmlops.stack.errors import StackError


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path, log: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.log = log

    def run(self, args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        """kubectl's stdout; on failure a StackError with its message (and it is logged)."""
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as out:
            out.write(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        if check and result.returncode != 0:
            raise StackError(f"`kubectl {' '.join(args)}` failed: {result.stderr.strip()}")
        return result.stdout

    def ok(self, args: Sequence[str], stdin: str | None = None) -> bool:
        try:
            self.run(args, stdin)
        except StackError:
            return False
        return True

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        where = ["-n", namespace] if namespace else []
        # Server-side: the KServe CRDs are too large for the client-side last-applied annotation.
        self.run(["apply", "--server-side", "--force-conflicts", *where, "-f", "-"], manifest)

    def get(self, args: Sequence[str]) -> dict[str, Any] | None:
        """A resource as a dict, or None when it does not exist."""
        try:
            text = self.run(["get", *args, "-o", "json"])
        except StackError:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    def rollout(self, namespace: str, deployment: str, timeout_s: int) -> None:
        self.run(["-n", namespace, "rollout", "status", f"deployment/{deployment}",
                  f"--timeout={timeout_s}s"])  # fmt: skip

    def node_ready(self, node: str) -> bool:
        return condition(self.get(["node", node]), "Ready")

    def deployment_ready(self, namespace: str, name: str) -> bool | None:
        """True when every replica is ready, None when the Deployment does not exist."""
        deployment = self.get(["-n", namespace, "deployment", name])
        if deployment is None:
            return None
        status = deployment.get("status", {})
        wanted = deployment.get("spec", {}).get("replicas", 1)
        return bool(status.get("readyReplicas", 0) >= wanted > 0)


def condition(resource: dict[str, Any] | None, kind: str) -> bool:
    """Whether ``resource`` reports condition ``kind`` as True."""
    if resource is None:
        return False
    # A fresh object has `status: {}` or `conditions: null`, not an empty list.
    conditions = (resource.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float, hint: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not happen within {timeout_s:.0f} s. {hint}".strip())
        time.sleep(0.5)
