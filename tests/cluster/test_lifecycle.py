"""The cluster on this machine: up → node Ready → DNS in a pod → KServe served → up again (a
no-op). `down`, and nothing left on the host after it, is checked when the session ends
(`conftest.py`), after every other cluster test has used the same cluster.

Runs as root on a machine with the Debian packages the node needs; the first run builds
Kubernetes, etcd, CoreDNS, Helm and the KServe controller (15-25 min on 2 cores), later runs
reuse them.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalmlops.cluster import cluster, kserve
from fetalmlops.cluster.builds import GoBuilder
from fetalmlops.cluster.cli import app
from fetalmlops.cluster.configs import scratch_dockerfile
from fetalmlops.cluster.kube import Kubectl, condition
from fetalmlops.cluster.layout import Addresses, Layout

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

# Resolves a name with Go's own resolver, which reads the resolv.conf the kubelet wrote.
DNS_PROBE = """\
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	addrs, err := net.LookupHost(os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(addrs[0])
}
"""
DNS_PROBE_IMAGE = "localhost/dns-probe:test"
PROBE_POD = f"""\
apiVersion: v1
kind: Pod
metadata: {{name: dns-probe, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: probe
    image: {DNS_PROBE_IMAGE}
    imagePullPolicy: Never
    args: ["kubernetes.default"]
"""
INFERENCE_SERVICE = """\
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: webhook-probe, namespace: default}
spec:
  predictor:
    containers:
    - {name: kserve-container, image: "localhost/none:v1", imagePullPolicy: Never}
"""


@pytest.fixture(scope="module")
def layout(running_cluster: Layout) -> Layout:
    return running_cluster


@pytest.fixture(scope="module")
def running(layout: Layout) -> Kubectl:
    return cluster.kubectl(layout)


def test_the_node_is_ready_and_status_says_so(running: Kubectl) -> None:
    assert running.node_ready(Addresses.default().node_name)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "kube-apiserver" in result.output and "MiB" in result.output


def test_a_pod_resolves_the_kubernetes_service_through_coredns(
    running: Kubectl, layout: Layout, tmp_path: Path
) -> None:
    from fetalmlops.cluster.images import Buildah
    from fetalmlops.cluster.load import imported

    context = tmp_path / "probe"
    context.mkdir()
    (context / "go.mod").write_text("module dnsprobe\n\ngo 1.24\n")
    (context / "main.go").write_text(DNS_PROBE)
    env = {**os.environ, **GoBuilder(layout, print).env()}
    go = subprocess.run(["go", "build", "-o", str(context / "probe"), "."], cwd=context, env=env,
                        capture_output=True, text=True)  # fmt: skip
    assert go.returncode == 0, go.stderr
    (context / "Dockerfile").write_text(scratch_dockerfile("probe"))
    Buildah(layout.cache).build(DNS_PROBE_IMAGE, context)
    imported(layout, [DNS_PROBE_IMAGE], print)

    running.run(["delete", "pod", "dns-probe", "--ignore-not-found", "--wait=true"])
    running.apply(PROBE_POD)
    running.run(["wait", "pod/dns-probe", "--for=jsonpath={.status.phase}=Succeeded",
                 "--timeout=120s"])  # fmt: skip
    answer = running.run(["logs", "dns-probe"]).strip()
    assert answer == Addresses.default().kubernetes_service_ip


def test_kserve_crds_are_served_and_its_webhook_answers(running: Kubectl) -> None:
    for crd in kserve.CRDS:
        assert condition(running.get(["crd", crd]), "Established"), crd
    assert running.deployment_ready(kserve.NAMESPACE, kserve.DEPLOYMENT)
    # A server-side dry run passes the InferenceService through KServe's admission webhooks:
    # this needs the controller serving TLS with the certificate the caBundle trusts.
    out = running.run(["apply", "--dry-run=server", "-f", "-"], INFERENCE_SERVICE)
    assert "webhook-probe" in out


def test_up_on_a_running_cluster_starts_nothing(running: Kubectl, layout: Layout) -> None:
    pids = {p.name: p.pid for p in cluster.status(layout).processes}
    began = time.monotonic()
    state = cluster.up(layout)
    assert time.monotonic() - began < 30
    assert {p.name: p.pid for p in state.processes} == pids
