"""The rendered configuration of containerd, CNI, the kubelet and kube-proxy."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from fetalmlops.cluster.configs import (
    PAUSE_IMAGE,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    scratch_dockerfile,
)
from fetalmlops.cluster.layout import Addresses, Layout

LAYOUT = Layout(Path("/cache"))
CRI = "io.containerd.grpc.v1.cri"


def test_containerd_keeps_its_state_in_our_folder_and_clamps_oom_score_adj() -> None:
    config = tomllib.loads(containerd_config(LAYOUT))
    assert config["root"] == str(LAYOUT.containerd_root)
    assert config["state"] == str(LAYOUT.containerd_state)
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    cri = config["plugins"][CRI]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == PAUSE_IMAGE == "localhost/pause:local"
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf)
    assert Path(config["plugins"]["io.containerd.internal.v1.opt"]["path"]).is_relative_to(
        LAYOUT.root
    )


def test_the_pod_network_is_a_bridge_without_masquerading() -> None:
    network = json.loads(cni_config(LAYOUT, Addresses()))
    bridge = network["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "cni0"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["dataDir"] == str(LAYOUT.cni_ipam)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]


def test_the_kubelet_runs_on_cgroup_v1_and_points_pods_at_cluster_dns() -> None:
    pki = {"ca": "/p/ca.crt", "crt": "/p/k.crt", "key": "/p/k.key"}
    config = kubelet_config(LAYOUT, Addresses(), pki)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == ["10.96.0.10"]
    assert config["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert config["podLogsDir"] == str(LAYOUT.pod_logs)
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_kube_proxy_leaves_host_wide_settings_alone() -> None:
    config = kube_proxy_config(Addresses(), "/p/kube-proxy.kubeconfig")
    assert config["mode"] == "iptables"
    assert config["iptables"]["localhostNodePorts"] is False  # would set route_localnet=1
    assert config["conntrack"]["maxPerCore"] == 0


def test_scratch_images_hold_one_binary_and_may_drop_root() -> None:
    assert scratch_dockerfile("manager", "65532:65532") == (
        'FROM scratch\nCOPY manager /manager\nUSER 65532:65532\nENTRYPOINT ["/manager"]\n'
    )
    assert "USER" not in scratch_dockerfile("coredns")
