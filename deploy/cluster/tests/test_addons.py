"""CoreDNS's manifests and KServe's chart, made to run without cert-manager or registries."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetalmlops.cluster import coredns, kserve
from fetalmlops.cluster.builds import KSERVE_VERSION, Binaries
from fetalmlops.cluster.images import KSERVE_STORAGE_IMAGE, STORAGE_INITIALIZER_DIR, repository_root
from fetalmlops.cluster.layout import Addresses, Layout


def _kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(d for d in documents if d["kind"] == kind)


def test_coredns_serves_the_cluster_domain_at_the_dns_service_address() -> None:
    documents = list(yaml.safe_load_all(coredns.manifest(Addresses(), "localhost/coredns:v1")))
    assert _kind(documents, "Service")["spec"]["clusterIP"] == "10.96.0.10"
    container = _kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "localhost/coredns:v1"
    assert container["imagePullPolicy"] == "Never"
    corefile = _kind(documents, "ConfigMap")["data"]["Corefile"]
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in corefile
    assert "forward" not in corefile  # no upstream is reachable


RENDERED: list[dict[str, Any]] = [
    {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"}},
    {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "i"}},
    {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "v", "annotations": {"cert-manager.io/inject-ca-from": "kserve/c"}},
        "webhooks": [{"name": "w", "clientConfig": {"service": {"name": "s"}}}],
    },
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": kserve.DEPLOYMENT},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "kube-rbac-proxy",
                            "image": "quay.io/brancz/kube-rbac-proxy:v0.18.0",
                        },
                        {"name": "manager", "image": "localhost/kserve-controller:v0.16.0"},
                    ]
                }
            }
        },
    },
    None,
]


def test_cert_manager_objects_are_dropped_and_the_ca_injected() -> None:
    documents = kserve.without_cert_manager(RENDERED, b"PEM")
    assert [d["kind"] for d in documents] == ["ValidatingWebhookConfiguration", "Deployment"]
    webhook = documents[0]
    assert base64.b64decode(webhook["webhooks"][0]["clientConfig"]["caBundle"]) == b"PEM"
    assert "cert-manager.io/inject-ca-from" not in webhook["metadata"]["annotations"]


def test_the_rbac_proxy_sidecar_is_removed() -> None:
    deployment = kserve.without_cert_manager(RENDERED, b"PEM")[1]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["manager"]


def test_the_controller_runs_in_raw_deployment_mode_on_the_local_image() -> None:
    values = kserve.chart_values("v0.16.0")
    assert values["kserve.controller.deploymentMode"] == "Standard"
    assert values["kserve.controller.image"] == "localhost/kserve-controller"
    image = f"{values['kserve.storage.image']}:{values['kserve.storage.tag']}"
    assert image == KSERVE_STORAGE_IMAGE


def test_the_real_chart_renders_to_images_we_have() -> None:
    """Against the chart in the kserve module and Helm, both built by `fetalmlops cluster`."""
    layout = Layout.default()
    charts = Binaries(layout).kserve_charts
    from fetalmlops.cluster.tools import HELM

    helm = HELM.path(layout.cache)
    if not charts.is_dir() or not helm.exists() or shutil.which("openssl") is None:
        pytest.skip("needs `fetalmlops cluster build` first (the kserve module and Helm)")
    rendered = kserve.render(helm, charts, "v0.16.0", Path("/nonexistent"))
    documents = kserve.without_cert_manager(rendered, b"PEM")
    assert not any(d["apiVersion"].startswith("cert-manager.io") for d in documents)
    workloads = [d for d in documents if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
    images = {c["image"] for w in workloads for c in w["spec"]["template"]["spec"]["containers"]}
    assert images == {"localhost/kserve-controller:v0.16.0"}
    webhooks = [d for d in documents if d["kind"] in kserve.WEBHOOK_KINDS]
    assert webhooks and all(w["clientConfig"]["caBundle"] for d in webhooks for w in d["webhooks"])
    (storage,) = [d for d in documents if d["kind"] == "ClusterStorageContainer"]
    assert storage["spec"]["container"]["image"] == KSERVE_STORAGE_IMAGE
    assert {"prefix": "s3://"} in storage["spec"]["supportedUriFormats"]


def test_the_storage_initializer_is_kserve_storage_at_the_controllers_version() -> None:
    """Built from PyPI's kserve-storage, as Docker Hub's kserve/storage-initializer is."""
    requirements = (repository_root() / STORAGE_INITIALIZER_DIR / "requirements.txt").read_text()
    assert f"kserve-storage=={KSERVE_VERSION.removeprefix('v')} " in requirements
    assert KSERVE_STORAGE_IMAGE.endswith(f":{KSERVE_VERSION}")


def test_kserves_own_objects_wait_for_its_webhooks() -> None:
    runtime = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ClusterServingRuntime"}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}
    assert kserve.split_served([runtime, role]) == ([role], [runtime])
