"""Where the cluster keeps everything, and the addresses it takes: pure values, no I/O.

Everything lives under ``<cache>/cluster/`` (the cache of `fetalmlops stack`, see
``fetalmlops.stack.config``), so `rm -rf` of that folder after `fetalmlops cluster down` removes
the cluster without a trace. Other code (image loading, tests, Helm installs) finds the
containerd socket and the admin kubeconfig here rather than by guessing paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path


@dataclass(frozen=True)
class Addresses:
    """The node's name and the address ranges of the cluster."""

    node_name: str = "node1"
    # An address we own, put on `lo`: the VM's kernel has no `dummy` link type, and the
    # apiserver must advertise an address pods can reach that is not the VM's uplink.
    node_ip: str = "10.250.0.1"
    service_cidr: str = "10.96.0.0/16"
    pod_cidr: str = "10.244.0.0/24"
    cluster_domain: str = "cluster.local"
    apiserver_port: int = 6443
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    etcd_metrics_port: int = 2381

    @classmethod
    def default(cls) -> Addresses:
        """The node address the local stack advertises to pods (`FETALMLOPS_STACK_NODE_ADDRESS`)."""
        from fetalmlops.stack.config import StackConfig

        return cls(node_ip=StackConfig().node_address)

    @property
    def kubernetes_service_ip(self) -> str:
        """The first service address, which the apiserver takes for `kubernetes.default`."""
        return str(IPv4Network(self.service_cidr)[1])

    @property
    def dns_service_ip(self) -> str:
        """The tenth service address: the conventional cluster DNS address (kubeadm's too)."""
        return str(IPv4Network(self.service_cidr)[10])

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.node_ip}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client_port}"


@dataclass(frozen=True)
class Layout:
    """The paths of one cluster under ``cache`` (the project's cache root)."""

    cache: Path

    @classmethod
    def default(cls) -> Layout:
        # Imported here: the stack's settings are the one source of the cache root.
        from fetalmlops.stack.config import StackConfig

        return cls(StackConfig().cache)

    @property
    def root(self) -> Path:
        return self.cache / "cluster"

    # --- built once, kept across `down` -------------------------------------------------------
    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def go(self) -> Path:
        """GOPATH; its module cache and build cache make a second build take about a minute."""
        return self.root / "go"

    @property
    def go_mod_cache(self) -> Path:
        return self.go / "pkg" / "mod"

    @property
    def go_build_cache(self) -> Path:
        return self.go / "build-cache"

    @property
    def builds(self) -> Path:
        """The wrapper Go modules the binaries are built from."""
        return self.root / "build"

    @property
    def image_contexts(self) -> Path:
        """Build contexts (a Dockerfile and a static binary) of the images made FROM scratch."""
        return self.root / "image-contexts"

    @property
    def build_logs(self) -> Path:
        return self.cache / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        """Cluster-admin credentials: what `export KUBECONFIG=...` points at."""
        return self.root / "admin.kubeconfig"

    @property
    def containerd_root(self) -> Path:
        """containerd's persistent store: imported images survive `down`."""
        return self.root / "containerd" / "root"

    # --- the running cluster, removed by `down` ------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def run(self) -> Path:
        """Pidfiles, the lock and what `up` recorded about the host to restore on `down`."""
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.cache / "logs" / "cluster"

    @property
    def host_record(self) -> Path:
        return self.run / "host.json"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.conf / "containerd.toml"

    @property
    def cni_conf(self) -> Path:
        return self.conf / "cni"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni-ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def mount_roots(self) -> tuple[Path, ...]:
        """Where the node mounts things (pod volumes; network namespaces and container root
        filesystems). Only these: Buildah's storage, also under `root`, has mounts of its own
        that a concurrent image build is using."""
        return (self.kubelet, self.containerd_state, self.containerd_root)

    @property
    def volatile(self) -> tuple[Path, ...]:
        """What `down` deletes: a fresh cluster each `up` (binaries, certs and images stay)."""
        return (
            self.conf,
            self.containerd_state,
            self.cni_ipam,
            self.kubelet,
            self.pod_logs,
            self.etcd_data,
        )
