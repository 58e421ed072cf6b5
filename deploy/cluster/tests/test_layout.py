"""Where the cluster keeps things and which addresses it takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalmlops.cluster.layout import Addresses, Layout


def test_default_layout_lives_in_the_stacks_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FETALMLOPS_STACK_HOME", str(tmp_path))
    layout = Layout.default()
    assert layout.root == tmp_path / "cluster"
    assert layout.build_logs == tmp_path / "logs"


def test_every_path_but_the_logs_is_under_the_cluster_root() -> None:
    layout = Layout(Path("/c"))
    paths = [
        layout.bin, layout.go_mod_cache, layout.go_build_cache, layout.pki, layout.run,
        layout.containerd_socket, layout.containerd_root, layout.containerd_state,
        layout.admin_kubeconfig, layout.kubelet, layout.etcd_data, layout.cni_ipam,
    ]  # fmt: skip
    assert all(p.is_relative_to(layout.root) for p in paths)


def test_down_deletes_the_running_state_but_keeps_builds_certificates_and_images() -> None:
    layout = Layout(Path("/c"))
    for kept in (layout.bin, layout.go, layout.pki, layout.containerd_root):
        assert not any(kept.is_relative_to(v) or v.is_relative_to(kept) for v in layout.volatile)
    assert layout.etcd_data in layout.volatile
    assert layout.kubelet in layout.volatile


def test_the_containerd_socket_fits_a_unix_socket_address() -> None:
    # sun_path holds 108 bytes: a longer cache path would make containerd fail at start.
    assert len(str(Layout.default().containerd_socket)) < 108


def test_service_addresses_follow_the_service_range() -> None:
    addresses = Addresses(service_cidr="10.96.0.0/16")
    assert addresses.kubernetes_service_ip == "10.96.0.1"
    assert addresses.dns_service_ip == "10.96.0.10"
    assert addresses.apiserver_url == "https://10.250.0.1:6443"


def test_the_node_address_is_the_one_the_stack_advertises_to_pods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FETALMLOPS_STACK_NODE_ADDRESS", "10.250.7.1")
    assert Addresses.default().node_ip == "10.250.7.1"
