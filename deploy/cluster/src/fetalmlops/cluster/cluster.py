"""Start, stop and describe the single-node cluster.

``up()`` is idempotent: on a running cluster it starts nothing and only reports. It also
forwards the local stack's ports from the node address (``bridge``), so that pods reach Kafka,
MinIO and PostgreSQL there. ``down()`` stops every process, the forwarders too, removes the
pods' containers, and puts the host back as `up` found it (see ``host.py``); binaries,
certificates and imported images stay for the next `up`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from fetalmlops.cluster import coredns, host, kserve, scratch
from fetalmlops.cluster.bridge import Bridge, forwards
from fetalmlops.cluster.builds import Binaries, build_all
from fetalmlops.cluster.components import Component, Probe, answers, components, log
from fetalmlops.cluster.configs import (
    cni_config,
    containerd_config,
    dump,
    kube_proxy_config,
    kubelet_config,
)
from fetalmlops.cluster.kube import Kubectl, condition, wait_for
from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.cluster.pki import Authority
from fetalmlops.cluster.state import AddonStatus, ClusterStatus, ProcessStatus
from fetalmlops.cluster.tools import HELM
from fetalmlops.stack.component import Progress
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.process import wait_until

# The programs the node runs that come from Debian, and the packages that bring them.
SYSTEM_PROGRAMS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "buildah": "buildah",
    "iptables": "iptables",
    "ip": "iproute2",
    "openssl": "openssl",
    "gcc": "gcc libc6-dev",
    "go": "golang (1.24+)",
}
START_TIMEOUT_S = 120.0
ADDON_TIMEOUT_S = 180


def _quiet(_: str) -> None:
    pass


def missing_programs() -> dict[str, str]:
    return {p: pkg for p, pkg in SYSTEM_PROGRAMS.items() if shutil.which(p) is None}


def check_host() -> None:
    if os.geteuid() != 0:
        raise StackError("a Kubernetes node needs root (network, mounts, cgroups): run as root.")
    missing = missing_programs()
    if missing:
        packages = " ".join(sorted(set(missing.values()) - {"golang (1.24+)"}))
        raise StackError(f"missing {', '.join(missing)}: `apt-get install -y {packages}`"
                         + (" and Go 1.24+" if "go" in missing else ""))  # fmt: skip


@contextlib.contextmanager
def _exclusive(layout: Layout) -> Iterator[None]:
    """Serialises `up`/`down`, so two terminals cannot start a component twice."""
    layout.run.mkdir(parents=True, exist_ok=True)
    with (layout.run / "cluster.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def bridge(layout: Layout) -> Bridge:
    from fetalmlops.stack.config import StackConfig

    return Bridge(StackConfig(), layout.run, layout.logs)


def kubectl(layout: Layout) -> Kubectl:
    binaries = Binaries(layout)
    return Kubectl(binaries.kube("kubectl"), layout.admin_kubeconfig, layout.logs / "kubectl.log")


def write_configs(layout: Layout, addresses: Addresses) -> None:
    pki = Authority(layout, addresses)
    for folder in (
        layout.conf,
        layout.cni_conf,
        layout.logs,
        layout.containerd_root,
        layout.containerd_state,
        layout.kubelet,
        layout.pod_logs,
    ):
        folder.mkdir(parents=True, exist_ok=True)  # fmt: skip
    layout.containerd_config.write_text(containerd_config(layout))
    (layout.cni_conf / "10-bridge.conflist").write_text(cni_config(layout, addresses))
    kubelet_pki = {"ca": str(pki.crt("ca")), "crt": str(pki.crt("kubelet")),
                   "key": str(pki.key("kubelet"))}  # fmt: skip
    (layout.conf / "kubelet.yaml").write_text(dump(kubelet_config(layout, addresses, kubelet_pki)))
    proxy = kube_proxy_config(addresses, str(pki.kubeconfig("kube-proxy")))
    (layout.conf / "kube-proxy.yaml").write_text(dump(proxy))


def _start(layout: Layout, component: Component, progress: Progress) -> None:
    daemon = component.daemon(layout)
    pid = daemon.pid()
    if pid is not None:
        progress(f"{component.name}: already running (pid {pid})")
    else:
        pid = daemon.spawn(component.argv)
        progress(f"{component.name}: started (pid {pid})")
    wait_until(lambda: answers(component.probe), name=component.name, log=daemon.log,
               timeout_s=START_TIMEOUT_S, alive=lambda: daemon.pid() is not None)  # fmt: skip


def up(
    layout: Layout | None = None,
    addresses: Addresses | None = None,
    progress: Progress = _quiet,
    *,
    with_kserve: bool = True,
) -> ClusterStatus:
    layout = layout or Layout.default()
    addresses = addresses or Addresses.default()
    check_host()
    with _exclusive(layout):
        binaries = build_all(layout, progress, kserve=with_kserve)
        helm = HELM.ensure(layout.cache) if with_kserve else None
        before = status(layout, addresses)
        if before.running and _addons_ready(before, with_kserve):
            bridge(layout).up()
            # The kubelet removes unused images when the disk fills, the pod sandbox's too
            # (containerd 1.6 cannot pin it): without it no pod starts again.
            scratch.provide(layout, scratch.pause_image(binaries), progress)
            progress("the cluster is already running")
            return before
        Authority(layout, addresses).ensure()
        write_configs(layout, addresses)
        host.prepare(layout, addresses)
        began = time.monotonic()
        for component in components(layout, binaries, addresses):
            if component.name == "kubelet":
                # The kubelet starts the pod sandbox at once: its image must be there first.
                scratch.provide(layout, scratch.pause_image(binaries), progress)
            _start(layout, component, progress)
        bridge(layout).up()  # the node address is on `lo` now
        progress("bridge: the stack's Kafka, MinIO and PostgreSQL at the node address")
        k = kubectl(layout)
        wait_for(lambda: k.node_ready(addresses.node_name), "node Ready", START_TIMEOUT_S,
                 f"see {log(layout, 'kubelet')}")  # fmt: skip
        progress(f"node {addresses.node_name} Ready {time.monotonic() - began:.1f} s after start")
        wait_for(lambda: k.ok(["get", "serviceaccount", "default"]), "the default service account",
                 START_TIMEOUT_S, f"see {log(layout, 'kube-controller-manager')}")  # fmt: skip
        install_coredns(layout, addresses, binaries, k, progress)
        if with_kserve and helm is not None:
            install_kserve(layout, addresses, binaries, k, helm, progress)
    return status(layout, addresses)


def _addons_ready(current: ClusterStatus, with_kserve: bool) -> bool:
    wanted = {"coredns"} | ({"kserve"} if with_kserve else set())
    return all(a.ready for a in current.addons if a.name in wanted)


def install_coredns(
    layout: Layout, addresses: Addresses, binaries: Binaries, k: Kubectl, progress: Progress
) -> None:
    image = scratch.coredns_image(binaries)
    scratch.provide(layout, image, progress)
    progress("coredns: applying")
    k.apply(coredns.manifest(addresses, image.tag))
    k.rollout(coredns.NAMESPACE, coredns.DEPLOYMENT, ADDON_TIMEOUT_S)
    progress("coredns: ready")


def install_kserve(
    layout: Layout,
    addresses: Addresses,
    binaries: Binaries,
    k: Kubectl,
    helm: Path,
    progress: Progress,
) -> None:
    image = scratch.kserve_controller_image(binaries)
    scratch.provide(layout, image, progress)
    charts = binaries.kserve_charts
    progress("kserve: installing CRDs")
    k.apply(kserve.crd_manifests(charts))
    # Not `kubectl wait`: it fails, not waits, while a new CRD has no conditions yet.
    wait_for(lambda: all(condition(k.get(["crd", c]), "Established") for c in kserve.CRDS),
             "KServe's CRDs Established", 60)  # fmt: skip
    k.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": kserve.NAMESPACE}}))  # fmt: skip
    authority = Authority(layout, addresses)
    k.apply(yaml.safe_dump(kserve.webhook_secret(authority)))
    rendered = kserve.render(helm, charts, image.tag.split(":")[1], layout.admin_kubeconfig)
    documents = kserve.without_cert_manager(rendered, authority.crt("ca").read_bytes())
    # KServe's own objects (the ClusterServingRuntimes) pass its admission webhooks, which
    # answer only once the controller runs: they go in after it is ready.
    controller, served = kserve.split_served(documents)
    progress("kserve: applying the controller (its readiness probe waits 30 s)")
    k.apply(yaml.safe_dump_all(controller, sort_keys=False), kserve.NAMESPACE)
    k.rollout(kserve.NAMESPACE, kserve.DEPLOYMENT, ADDON_TIMEOUT_S)
    # Ready is not yet reachable: until kube-proxy has synced the webhook Service's new
    # endpoint, its ClusterIP still rejects connections.
    manifest = yaml.safe_dump_all(served, sort_keys=False)
    wait_for(lambda: k.ok(["apply", "--server-side", "--force-conflicts", "-f", "-"], manifest),
             "KServe's admission webhooks to answer", 60,
             f"see `kubectl -n {kserve.NAMESPACE} logs deploy/{kserve.DEPLOYMENT}`")  # fmt: skip
    progress("kserve: controller ready")


def down(
    layout: Layout | None = None, addresses: Addresses | None = None, progress: Progress = _quiet
) -> list[str]:
    """Stops everything; returns what could not be cleaned up (empty when the host is clean)."""
    layout = layout or Layout.default()
    addresses = addresses or Addresses.default()
    with _exclusive(layout):
        binaries = Binaries(layout)
        ordered = components(layout, binaries, addresses)
        containerd, rest = ordered[0], ordered[1:]
        # All but containerd at once (each takes seconds to exit, the apiserver more); the
        # pods' containers only after the kubelet, which would restart them.
        with ThreadPoolExecutor(len(rest)) as pool:
            list(pool.map(lambda c: _stop(layout, c, progress), reversed(rest)))
        _remove_containers(layout, progress)
        _stop(layout, containerd, progress)
        bridge(layout).down()
        # Left when containerd was gone before `down` (a crash): nothing else would end them.
        survivors = host.kill(host.shims(layout) | host.pod_processes())
        if layout.host_record.exists() or host.has_node_address(addresses):
            progress("host: removing mounts, cni0, iptables chains, cgroups, the node address")
        problems = [f"process {pid} survived SIGKILL" for pid in survivors]
        problems += host.restore(layout, addresses)
        if not host.node_mounts(layout):
            # Never with a mount left inside: rmtree would delete through it.
            for path in layout.volatile:
                shutil.rmtree(path, ignore_errors=True)
    return problems


def _stop(layout: Layout, component: Component, progress: Progress) -> None:
    daemon = component.daemon(layout)
    pid = daemon.pid()
    if pid is not None:
        progress(f"{component.name}: stopping (pid {pid})")
    daemon.stop(component.stop_timeout_s)


def _remove_containers(layout: Layout, progress: Progress) -> None:
    """Pods outlive the kubelet under containerd's shims: kill and delete them through ctr."""
    socket = layout.containerd_socket
    if not answers(Probe(f"unix://{socket}")):
        return
    ctr = ["ctr", "-a", str(socket), "-n", "k8s.io"]

    def ids(kind: str) -> list[str]:
        result = subprocess.run([*ctr, kind, "ls", "-q"], capture_output=True, text=True,
                                check=False)  # fmt: skip
        return result.stdout.split()

    tasks = ids("tasks")
    if tasks:
        progress(f"containerd: removing {len(tasks)} containers")
    for task in tasks:
        subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", task], capture_output=True,
                       check=False)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in ids("tasks"):
            subprocess.run([*ctr, "tasks", "delete", "-f", task], capture_output=True, check=False)
        if not ids("tasks"):
            break
        time.sleep(0.2)
    for container in ids("containers"):
        subprocess.run([*ctr, "containers", "delete", container], capture_output=True,
                       check=False)  # fmt: skip


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


ADDONS = (
    ("coredns", coredns.NAMESPACE, coredns.DEPLOYMENT),
    ("kserve", kserve.NAMESPACE, kserve.DEPLOYMENT),
)


def status(layout: Layout | None = None, addresses: Addresses | None = None) -> ClusterStatus:
    layout = layout or Layout.default()
    addresses = addresses or Addresses.default()
    processes = []
    for component in components(layout, Binaries(layout), addresses):
        pid = component.daemon(layout).pid()
        serving = pid is not None and answers(component.probe)
        rss = _rss(pid) if pid is not None else None
        processes.append(
            ProcessStatus(component.name, pid, serving, rss, component.daemon(layout).log)
        )
    forwarders = bridge(layout)
    for forward in forwards(forwarders.stack):
        daemon = forwarders.daemon(forward)
        pid = daemon.pid()
        rss = _rss(pid) if pid is not None else None
        processes.append(ProcessStatus(daemon.name, pid, pid is not None, rss, daemon.log))
    addons: list[AddonStatus] = []
    apiserver = next(p for p in processes if p.name == "kube-apiserver")
    for name, namespace, deployment in ADDONS:
        ready = (
            kubectl(layout).deployment_ready(namespace, deployment) if apiserver.running else None
        )
        addons.append(AddonStatus(name, namespace, deployment, ready))
    return ClusterStatus(tuple(processes), tuple(addons), layout.admin_kubeconfig)
