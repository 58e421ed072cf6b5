"""What `down` undoes on the host, read from the kernel's own listings."""

from __future__ import annotations

from pathlib import Path

from fetalmlops.cluster.host import (
    chain_cleanup,
    is_empty_table,
    mounts_under,
    sysctl_path,
    tables,
)
from fetalmlops.cluster.layout import Layout

DATA = Path(__file__).parent / "data"

# The shape of `iptables-save` on a node running kube-proxy (iptables mode) and the kubelet,
# with one chain of the operator's own (OPERATOR-IN) that must survive `down`.
SAVE = (DATA / "iptables-save.txt").read_text()


def test_jumps_into_kube_chains_are_removed_before_the_chains() -> None:
    commands = chain_cleanup(SAVE)
    first_flush = next(i for i, c in enumerate(commands) if c[2] == "-F")
    unlinks, rest = commands[:first_flush], commands[first_flush:]
    assert all(c[2] == "-D" and not c[3].startswith("KUBE-") for c in unlinks)
    assert [
        "-t", "filter", "-D", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment",
        "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES",
    ] in unlinks  # fmt: skip
    assert ["-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
            "kubernetes service portals", "-j", "KUBE-SERVICES"] in unlinks  # fmt: skip
    flushes = [c for c in rest if c[2] == "-F"]
    deletes = [c for c in rest if c[2] == "-X"]
    assert rest == flushes + deletes  # every chain emptied before any is deleted
    assert ["-t", "mangle", "-X", "KUBE-KUBELET-CANARY"] in deletes
    assert ["-t", "nat", "-X", "KUBE-SVC-NPX46M4PTMTKRN6Y"] in deletes


def test_the_operators_own_rules_and_chains_are_left_alone() -> None:
    touched = [word for command in chain_cleanup(SAVE) for word in command]
    assert "OPERATOR-IN" not in touched
    assert not any(c[2] == "-D" and "22" in c for c in chain_cleanup(SAVE))


def test_a_table_is_empty_only_without_rules_and_custom_chains() -> None:
    assert tables(SAVE) == {"mangle", "filter", "nat"}
    assert not is_empty_table(SAVE, "filter")
    assert not is_empty_table(SAVE, "mangle")  # KUBE-KUBELET-CANARY still there
    cleaned = "*mangle\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    assert is_empty_table(cleaned, "mangle")
    assert not is_empty_table(cleaned, "nat")  # absent is not "empty and ours to delete"


MOUNTINFO = (DATA / "mountinfo.txt").read_text()


def test_the_nodes_mounts_are_listed_deepest_first_and_buildahs_left_alone() -> None:
    layout = Layout(Path("/c"))
    points = mounts_under(MOUNTINFO, layout.mount_roots)
    assert "/c/cluster-other/x" not in points and "/" not in points
    assert not any("containers/storage" in p for p in points)  # a build may be using it
    assert "/c/cluster/kubelet/pods/with space" in points
    assert points[-1] == "/c/cluster/kubelet"  # after everything mounted inside it
    assert len(points) == 5


def test_sysctl_names_map_to_proc_sys() -> None:
    assert sysctl_path("net.ipv4.ip_forward") == Path("/proc/sys/net/ipv4/ip_forward")
