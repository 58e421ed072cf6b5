"""The KServe controller in RawDeployment ("Standard") mode, from the charts in its Go module.

Upstream's install needs cert-manager and pulls kube-rbac-proxy from quay.io; neither is
reachable here. So the chart is rendered with `helm template`, the cert-manager objects are
dropped, the webhook's serving certificate comes from the cluster CA (`pki.py`) and is trusted
through the webhook configurations' caBundle, and the kube-rbac-proxy sidecar, which only
guards the metrics endpoint, is removed (the controller's metrics are then not served).
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from fetalmlops.cluster.images import KSERVE_STORAGE_REPOSITORY
from fetalmlops.cluster.pki import Authority
from fetalmlops.cluster.scratch import KSERVE_CONTROLLER_REPOSITORY
from fetalmlops.stack.errors import StackError

NAMESPACE = "kserve"
DEPLOYMENT = "kserve-controller-manager"
WEBHOOK_SECRET = "kserve-webhook-server-cert"
RBAC_PROXY = "kube-rbac-proxy"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
# What a `fetalmlops` InferenceService needs the API to serve.
CRDS = (
    "inferenceservices.serving.kserve.io",
    "servingruntimes.serving.kserve.io",
    "clusterservingruntimes.serving.kserve.io",
)


def chart_values(tag: str) -> dict[str, str]:
    return {
        "kserve.controller.deploymentMode": "Standard",
        "kserve.controller.image": KSERVE_CONTROLLER_REPOSITORY,
        "kserve.controller.tag": tag,
        # No Ingress objects: there is no ingress controller; Services are reached directly.
        "kserve.controller.gateway.disableIngressCreation": "true",
        # The `default` ClusterStorageContainer's image: built here (`cluster images`), since
        # Docker Hub's is out of reach; imported with the project's images.
        "kserve.storage.image": KSERVE_STORAGE_REPOSITORY,
        "kserve.storage.tag": tag,
    }


def without_cert_manager(documents: Iterable[Any], ca_bundle: bytes) -> list[dict[str, Any]]:
    """The rendered chart, made to run without cert-manager or images from other registries."""
    kept: list[dict[str, Any]] = []
    for document in documents:
        if not document:
            continue
        if str(document.get("apiVersion", "")).startswith("cert-manager.io/"):
            continue
        if document.get("kind") in WEBHOOK_KINDS:
            annotations = document.get("metadata", {}).get("annotations", {})
            annotations.pop("cert-manager.io/inject-ca-from", None)
            for webhook in document.get("webhooks", []):
                webhook["clientConfig"]["caBundle"] = base64.b64encode(ca_bundle).decode()
        if document.get("kind") == "Deployment" and document["metadata"]["name"] == DEPLOYMENT:
            pod = document["spec"]["template"]["spec"]
            pod["containers"] = [c for c in pod["containers"] if c["name"] != RBAC_PROXY]
        kept.append(document)
    return kept


def split_served(documents: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(the controller and its plumbing, the objects of KServe's own API groups)."""

    def own(document: dict[str, Any]) -> bool:
        return ".kserve.io/" in str(document.get("apiVersion", ""))

    return [d for d in documents if not own(d)], [d for d in documents if own(d)]


def webhook_secret(authority: Authority) -> dict[str, Any]:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": WEBHOOK_SECRET, "namespace": NAMESPACE},
        "data": {
            "tls.crt": b64(authority.crt("kserve-webhook")),
            "tls.key": b64(authority.key("kserve-webhook")),
            "ca.crt": b64(authority.crt("ca")),
        },
    }


def render(helm: Path, charts: Path, tag: str, kubeconfig: Path) -> list[Any]:
    """`helm template` of the kserve-resources chart with our values."""
    sets = [arg for key, value in chart_values(tag).items() for arg in ("--set", f"{key}={value}")]
    result = subprocess.run(
        [str(helm), "template", "kserve", str(charts / "kserve-resources"), "-n", NAMESPACE,
         f"--kubeconfig={kubeconfig}", *sets],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"`helm template` of KServe's chart failed: {result.stderr.strip()}")
    return list(yaml.safe_load_all(result.stdout))


def crd_manifests(charts: Path) -> str:
    """The CRDs of the kserve-crd chart (plain files: the chart templates nothing)."""
    files = sorted((charts / "kserve-crd" / "templates").glob("*.yaml"))
    if not files:
        raise StackError(f"no CRDs in {charts / 'kserve-crd'}")
    return "\n---\n".join(f.read_text() for f in files)
