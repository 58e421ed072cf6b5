"""The configuration files of containerd, the CNI plugins, the kubelet and kube-proxy: pure text.

Each setting that differs from the upstream default says why; most keep the host as it was
(nothing written outside our folder, no sysctl changed that `down` could not put back).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from fetalmlops.cluster.layout import Addresses, Layout

PAUSE_IMAGE = "localhost/pause:local"
# containerd-shim-runc-v2 and the CNI plugins come from Debian's packages.
CNI_BIN = "/usr/lib/cni"
NETWORK_NAME = "k8s-pod-network"
BRIDGE = "cni0"


def containerd_config(layout: Layout) -> str:
    return f"""\
version = 2
root = "{layout.containerd_root}"
state = "{layout.containerd_state}"

[grpc]
  address = "{layout.containerd_socket}"

[plugins]
  # Its default is /opt/containerd: keep even this empty folder inside ours.
  [plugins."io.containerd.internal.v1.opt"]
    path = "{layout.root / "containerd" / "opt"}"
  [plugins."io.containerd.grpc.v1.cri"]
    # Built here and imported, never pulled: the machine reaches no image registry.
    sandbox_image = "{PAUSE_IMAGE}"
    # Pods' network namespaces under our state folder, not /run/netns.
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    tolerate_missing_hugetlb_controller = true
    # The VM withholds CAP_SYS_RESOURCE, so nobody may lower oom_score_adj: runc's init of a
    # pod sandbox (asked for -998) dies with "can't get final child's PID from pipe: EOF".
    # Clamping it costs Guaranteed pods their OOM protection.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # No systemd here: cgroups are managed through cgroupfs, as the kubelet does.
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN}"
      conf_dir = "{layout.cni_conf}"
"""


def cni_config(layout: Layout, addresses: Addresses) -> str:
    """One bridge for the node's pods; host-local hands out addresses, stored in our folder."""
    document = {
        "cniVersion": "0.4.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # No masquerading: pods reach only this machine, which has no route out anyway.
                "ipMasq": False,
                # A pod reaching itself through its own Service is sent back down its veth.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam),
                    "ranges": [[{"subnet": addresses.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def kubelet_config(layout: Layout, addresses: Addresses, pki: dict[str, str]) -> dict[str, Any]:
    """KubeletConfiguration; ``pki`` maps `ca`, `crt`, `key` to file paths."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": addresses.node_ip,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": pki["ca"]},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDomain": addresses.cluster_domain,
        "clusterDNS": [addresses.dns_service_ip],
        "failSwapOn": False,
        # The host is cgroup v1 (hybrid); newer kubelets refuse v1 unless told otherwise.
        "failCgroupV1": False,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "podLogsDir": str(layout.pod_logs),
        "tlsCertFile": pki["crt"],
        "tlsPrivateKeyFile": pki["key"],
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # The images were imported by hand and cannot be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        # Under disk pressure the kubelet removes every image no container runs, the pause
        # image too (containerd 1.6 cannot pin it), and no pod starts again until `up`
        # provides it: so pressure is only a disk about to fill. The node's disk is its
        # developer's, often past 90% of a large volume with gigabytes free.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "512Mi",
            "imagefs.available": "512Mi",
        },
    }


def kube_proxy_config(addresses: Addresses, kubeconfig: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "mode": "iptables",
        "clusterCIDR": addresses.pod_cidr,
        "hostnameOverride": addresses.node_name,
        "bindAddress": addresses.node_ip,
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
        # NodePorts on 127.0.0.1 need net.ipv4.conf.all.route_localnet=1: a host-wide change.
        "iptables": {"localhostNodePorts": False},
        # Zero leaves the host's conntrack table size and timeouts as they are.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def dump(document: dict[str, Any]) -> str:
    return str(yaml.safe_dump(document, sort_keys=False))


# --- images made FROM scratch: a static binary and nothing else --------------------------------
def scratch_dockerfile(binary: str, user: str | None = None) -> str:
    lines = ["FROM scratch", f"COPY {binary} /{binary}"]
    if user is not None:
        lines.append(f"USER {user}")
    lines.append(f'ENTRYPOINT ["/{binary}"]')
    return "\n".join(lines) + "\n"
