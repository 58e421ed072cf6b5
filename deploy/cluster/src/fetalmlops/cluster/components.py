"""The node's processes, in start order: how each is launched and how we know it serves.

No static pods and no systemd: every component is a plain process of ours with a pidfile, the
way `fetalmlops stack` runs Kafka. Their command lines are pure data, built here.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fetalmlops.cluster.builds import Binaries
from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.cluster.pki import Authority
from fetalmlops.stack.process import Daemon


@dataclass(frozen=True)
class Probe:
    """Where a component answers once it serves.

    ``unix://`` and ``tcp://`` must accept a connection; ``http(s)://`` must answer 200.
    A ``client`` (certificate, key) and ``ca`` authenticate an HTTPS probe; without ``ca`` the
    server's self-signed certificate is accepted (only loopback endpoints are probed so).
    """

    url: str
    ca: Path | None = None
    client: tuple[Path, Path] | None = None


@dataclass(frozen=True)
class Component:
    name: str
    argv: tuple[str, ...]
    probe: Probe
    # kube-apiserver holds on to watches for well over 15 s after SIGTERM; the state is in etcd.
    stop_timeout_s: float = 10.0

    def daemon(self, layout: Layout) -> Daemon:
        # Every command line names a path under our root (the binary, at least): a recycled
        # pid of an unrelated process is never taken for ours.
        return Daemon(self.name, layout.run / f"{self.name}.pid", log(layout, self.name),
                      str(layout.root))  # fmt: skip


def log(layout: Layout, name: str) -> Path:
    return layout.logs / f"{name}.log"


def components(layout: Layout, binaries: Binaries, addresses: Addresses) -> list[Component]:
    a, pki = addresses, Authority(layout, addresses)
    p = {n: str(pki.crt(n)) for n in ("ca", "apiserver", "apiserver-kubelet-client")}
    k = {n: str(pki.key(n)) for n in ("ca", "apiserver", "apiserver-kubelet-client")}
    kube = binaries.kube
    etcd_peer = f"http://127.0.0.1:{a.etcd_peer_port}"
    cm_kubeconfig = str(pki.kubeconfig("controller-manager"))
    scheduler_kubeconfig = str(pki.kubeconfig("scheduler"))
    # fmt: off
    return [
        Component(
            "containerd",
            ("/usr/bin/containerd", "--config", str(layout.containerd_config)),
            Probe(f"unix://{layout.containerd_socket}"),
        ),
        Component(
            "etcd",
            (str(binaries.etcd), "--name", a.node_name, "--data-dir", str(layout.etcd_data),
             "--listen-client-urls", a.etcd_url, "--advertise-client-urls", a.etcd_url,
             "--listen-peer-urls", etcd_peer, "--initial-advertise-peer-urls", etcd_peer,
             "--initial-cluster", f"{a.node_name}={etcd_peer}",
             "--listen-metrics-urls", f"http://127.0.0.1:{a.etcd_metrics_port}"),
            Probe(f"{a.etcd_url}/health"),
        ),
        Component(
            "kube-apiserver",
            (str(kube("kube-apiserver")), f"--etcd-servers={a.etcd_url}",
             f"--advertise-address={a.node_ip}", f"--bind-address={a.node_ip}",
             f"--secure-port={a.apiserver_port}",
             f"--tls-cert-file={p['apiserver']}", f"--tls-private-key-file={k['apiserver']}",
             f"--client-ca-file={p['ca']}",
             f"--kubelet-client-certificate={p['apiserver-kubelet-client']}",
             f"--kubelet-client-key={k['apiserver-kubelet-client']}",
             "--kubelet-preferred-address-types=InternalIP",
             f"--service-account-key-file={pki.service_account_pub}",
             f"--service-account-signing-key-file={pki.service_account_key}",
             f"--service-account-issuer=https://kubernetes.default.svc.{a.cluster_domain}",
             f"--service-cluster-ip-range={a.service_cidr}",
             "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
             "--allow-privileged=true"),
            Probe(f"{a.apiserver_url}/readyz", ca=pki.crt("ca"),
                  client=(pki.crt("admin"), pki.key("admin"))),
            stop_timeout_s=5.0,
        ),
        Component(
            "kube-controller-manager",
            (str(kube("kube-controller-manager")), f"--kubeconfig={cm_kubeconfig}",
             f"--authentication-kubeconfig={cm_kubeconfig}",
             f"--authorization-kubeconfig={cm_kubeconfig}",
             "--bind-address=127.0.0.1", "--leader-elect=false",
             "--use-service-account-credentials=true",
             f"--service-account-private-key-file={pki.service_account_key}",
             f"--root-ca-file={p['ca']}",
             f"--cluster-signing-cert-file={p['ca']}", f"--cluster-signing-key-file={k['ca']}",
             f"--service-cluster-ip-range={a.service_cidr}", "--allocate-node-cidrs=false"),
            Probe("https://127.0.0.1:10257/healthz"),
        ),
        Component(
            "kube-scheduler",
            (str(kube("kube-scheduler")), f"--kubeconfig={scheduler_kubeconfig}",
             f"--authentication-kubeconfig={scheduler_kubeconfig}",
             f"--authorization-kubeconfig={scheduler_kubeconfig}",
             "--bind-address=127.0.0.1", "--leader-elect=false"),
            Probe("https://127.0.0.1:10259/healthz"),
        ),
        Component(
            "kubelet",
            (str(kube("kubelet")), f"--config={layout.conf / 'kubelet.yaml'}",
             f"--kubeconfig={pki.kubeconfig('kubelet')}", f"--root-dir={layout.kubelet}",
             f"--node-ip={a.node_ip}", f"--hostname-override={a.node_name}"),
            Probe("http://127.0.0.1:10248/healthz"),
        ),
        Component(
            "kube-proxy",
            (str(kube("kube-proxy")), f"--config={layout.conf / 'kube-proxy.yaml'}"),
            # Its /healthz answers 503 until it has synced rules once: serving is enough here.
            Probe("tcp://127.0.0.1:10256"),
        ),
    ]
    # fmt: on


def answers(probe: Probe, timeout_s: float = 1.0) -> bool:
    scheme, _, rest = probe.url.partition("://")
    try:
        if scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout_s)
                s.connect(rest)
            return True
        if scheme == "tcp":
            host, _, port = rest.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
        if scheme == "https":
            context = ssl.create_default_context(cafile=probe.ca) if probe.ca else _unverified()
            if probe.client is not None:
                context.load_cert_chain(*probe.client)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        # No proxy from the environment: these are loopback and node addresses.
        with urllib.request.build_opener(*handlers).open(probe.url, timeout=timeout_s) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError, ValueError):
        return False


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
