"""The node's processes: what they are started with and how their health is read."""

from __future__ import annotations

import socket
from pathlib import Path

from fetalmlops.cluster.builds import Binaries
from fetalmlops.cluster.components import Probe, answers, components
from fetalmlops.cluster.layout import Addresses, Layout

LAYOUT = Layout(Path("/cache"))


def _components() -> dict[str, list[str]]:
    return {c.name: list(c.argv) for c in components(LAYOUT, Binaries(LAYOUT), Addresses())}


def test_components_start_in_dependency_order() -> None:
    assert list(_components()) == [
        "containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kubelet", "kube-proxy",
    ]  # fmt: skip


def test_every_command_line_names_our_folder_so_a_recycled_pid_is_never_ours() -> None:
    for name, argv in _components().items():
        assert str(LAYOUT.root) in " ".join(argv), name


def test_the_apiserver_serves_at_the_node_address_from_our_etcd() -> None:
    argv = _components()["kube-apiserver"]
    assert "--advertise-address=10.250.0.1" in argv
    assert "--etcd-servers=http://127.0.0.1:2379" in argv
    assert "--service-cluster-ip-range=10.96.0.0/16" in argv
    assert "--authorization-mode=Node,RBAC" in argv


def test_the_kubelet_keeps_its_state_in_our_folder() -> None:
    argv = _components()["kubelet"]
    assert f"--root-dir={LAYOUT.kubelet}" in argv
    assert "--node-ip=10.250.0.1" in argv


def test_a_unix_probe_answers_only_while_something_listens(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    probe = Probe(f"unix://{path}")
    assert not answers(probe)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        assert answers(probe)


def test_an_http_probe_of_a_closed_port_is_not_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not answers(Probe(f"http://127.0.0.1:{port}/healthz"))
    assert not answers(Probe(f"https://127.0.0.1:{port}/healthz"))
    assert not answers(Probe(f"tcp://127.0.0.1:{port}"))
