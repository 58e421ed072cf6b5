"""The `cluster` commands as a developer sees them (no cluster running)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalmlops.cluster.cli import app, table
from fetalmlops.cluster.state import AddonStatus, ClusterStatus, ProcessStatus

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FETALMLOPS_STACK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_status_lists_each_process_and_its_log_and_fails_when_stopped(fresh_home: Path) -> None:
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    for name in ("containerd", "etcd", "kube-apiserver", "kubelet", "kube-proxy"):
        assert str(fresh_home / "logs" / "cluster" / f"{name}.log") in result.output
    assert "stopped" in result.output


def test_env_points_kubectl_at_the_admin_kubeconfig(fresh_home: Path) -> None:
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    assert result.output == f"export KUBECONFIG={fresh_home / 'cluster' / 'admin.kubeconfig'}\n"


def test_the_table_shows_pid_memory_log_and_addon_readiness() -> None:
    state = ClusterStatus(
        processes=(
            ProcessStatus("etcd", 41, True, 64 * 2**20, Path("/l/etcd.log")),
            ProcessStatus("kubelet", 42, False, 10 * 2**20, Path("/l/kubelet.log")),
            ProcessStatus("kube-proxy", None, False, None, Path("/l/kube-proxy.log")),
        ),
        addons=(AddonStatus("kserve", "kserve", "kserve-controller-manager", None),),
        kubeconfig=Path("/k"),
    )
    lines = table(state).splitlines()
    assert lines[0].split() == ["COMPONENT", "STATE", "PID", "RSS", "LOG"]
    assert lines[1].split() == ["etcd", "running", "41", "64", "MiB", "/l/etcd.log"]
    assert lines[2].split()[:3] == ["kubelet", "starting", "42"]
    assert lines[3].split() == ["kube-proxy", "stopped", "-", "-", "/l/kube-proxy.log"]
    assert lines[4].split()[:2] == ["kserve", "absent"]
    assert not state.running


def test_down_without_a_cluster_is_a_clean_no_op_for_the_pure_parts(fresh_home: Path) -> None:
    from fetalmlops.cluster.cluster import status

    assert not status().running
