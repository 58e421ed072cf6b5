"""The machine-wide state a node needs, recorded before `up` and put back by `down`.

A Kubernetes node reaches outside its own folder: an address on `lo`, the `cni0` bridge,
iptables chains (kube-proxy's and the kubelet's), cgroups under `kubepods`, mounts (pod
volumes, network namespaces, container root filesystems), kernel settings the kubelet tunes,
and a few folders the kubelet, containerd's shims and libcni create at fixed paths. `up`
records what was there before; `down` removes what the cluster added and restores the rest.
The parsers are pure so that what `down` will do can be tested without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from fetalmlops.cluster.configs import BRIDGE
from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.stack.process import command_line, is_alive

# Kernel settings a node changes → who changes them. Their values before `up` are restored.
SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "up: pods' traffic is routed through the bridge",
    "net.bridge.bridge-nf-call-iptables": "up: Service rules must see bridged pod traffic",
    "net.bridge.bridge-nf-call-ip6tables": "up: the same for IPv6",
    "net.ipv4.conf.all.route_localnet": "kube-proxy, for NodePorts on 127.0.0.1 (turned off)",
    "vm.overcommit_memory": "the kubelet (protectKernelDefaults=false sets it to 1)",
    "vm.panic_on_oom": "the kubelet (0)",
    "kernel.panic": "the kubelet (10)",
    "kernel.panic_on_oops": "the kubelet (1)",
    "kernel.keys.root_maxkeys": "the kubelet (1000000)",
    "kernel.keys.root_maxbytes": "the kubelet (25000000)",
}
UP_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}
# Paths outside our folder created on first use: the kubelet's /var/log/containers symlinks,
# libcni's result cache, the shims' sockets and runc's state under /run/containerd.
FOREIGN_PATHS = (
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/var/lib/kubelet",
    "/run/netns",
    "/etc/kubernetes",
    "/run/kubernetes",
    "/opt/containerd",
    "/etc/cni",
)
CHAIN_PREFIXES = ("KUBE-", "CNI-")
BUILTIN_CHAINS = {"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostRecord:
    """The host as `up` found it."""

    sysctls: dict[str, str]
    absent_paths: tuple[str, ...]
    # iptables tables (family, name) that did not exist: iptables-nft leaves them behind empty.
    absent_tables: tuple[tuple[str, str], ...]


# --- pure --------------------------------------------------------------------------------------
def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _unescape(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(mountinfo: str, roots: Iterable[Path]) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (children before the mounts
    they sit in). The kubelet bind-mounts its own folder onto itself, hence "at"."""
    folders = [str(root).rstrip("/") for root in roots]
    points = {_unescape(line.split()[4]) for line in mountinfo.splitlines() if line.strip()}
    ours = [p for p in points if any(p == f or p.startswith(f + "/") for f in folders)]
    return sorted(ours, key=lambda p: (-p.count("/"), p))


def tables(save: str) -> set[str]:
    """The tables an `iptables-save` output lists."""
    return {line[1:].strip() for line in save.splitlines() if line.startswith("*")}


def chain_cleanup(save: str, prefixes: Iterable[str] = CHAIN_PREFIXES) -> list[list[str]]:
    """iptables arguments that remove every chain named with ``prefixes`` and every rule that
    jumps to one, from an `iptables-save` output: first the jumps from other chains, then
    flush all ours (they jump to each other), then delete them."""
    prefixes = tuple(prefixes)
    unlink: list[list[str]] = []
    flush: list[list[str]] = []
    delete: list[list[str]] = []
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":"):
            chain = line[1:].split()[0]
            if chain.startswith(prefixes):
                flush.append(["-t", table, "-F", chain])
                delete.append(["-t", table, "-X", chain])
        elif line.startswith("-A "):
            words = shlex.split(line)
            chain = words[1]
            target = _jump_target(words)
            if (
                not chain.startswith(prefixes)
                and target is not None
                and target.startswith(prefixes)
            ):
                unlink.append(["-t", table, "-D", *words[1:]])
    return unlink + flush + delete


def _jump_target(words: list[str]) -> str | None:
    for flag in ("-j", "--jump", "-g", "--goto"):
        if flag in words[:-1]:
            return words[words.index(flag) + 1]
    return None


def is_empty_table(save: str, table: str) -> bool:
    """True when ``table`` in an `iptables-save` output has no rule and only built-in chains."""
    current = ""
    for line in save.splitlines():
        if line.startswith("*"):
            current = line[1:].strip()
            continue
        if current != table:
            continue
        custom_chain = line.startswith(":") and line[1:].split()[0] not in BUILTIN_CHAINS
        if line.startswith("-A ") or custom_chain:
            return False
    return table in tables(save)


# --- effects -----------------------------------------------------------------------------------
IPTABLES = {"ip": "iptables", "ip6": "ip6tables"}


def _save(family: str) -> str:
    binary = shutil.which(f"{IPTABLES[family]}-save")
    if binary is None:
        return ""
    result = subprocess.run([binary], capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else ""


def _quiet(*argv: str) -> bool:
    result = subprocess.run(argv, capture_output=True, check=False)
    return result.returncode == 0


def observe() -> HostRecord:
    sysctls = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            sysctls[name] = sysctl_path(name).read_text().strip()
    absent_tables = [
        (family, table)
        for family in IPTABLES
        for table in ("filter", "nat", "mangle", "raw", "security")
        if table not in tables(_save(family))
    ]
    return HostRecord(
        sysctls=sysctls,
        absent_paths=tuple(p for p in FOREIGN_PATHS if not Path(p).exists()),
        absent_tables=tuple(absent_tables),
    )


def load_record(layout: Layout) -> HostRecord | None:
    try:
        data = json.loads(layout.host_record.read_text())
    except (OSError, ValueError):
        return None
    return HostRecord(
        sysctls=dict(data["sysctls"]),
        absent_paths=tuple(data["absent_paths"]),
        absent_tables=tuple((f, t) for f, t in data["absent_tables"]),
    )


def prepare(layout: Layout, addresses: Addresses) -> None:
    """Records the host (once: a second `up` must not record the first one's changes), then
    adds the node address and turns forwarding on."""
    if load_record(layout) is None:
        layout.host_record.parent.mkdir(parents=True, exist_ok=True)
        layout.host_record.write_text(json.dumps(asdict(observe()), indent=2) + "\n")
    if not has_node_address(addresses):
        subprocess.run(["ip", "addr", "add", f"{addresses.node_ip}/32", "dev", "lo"], check=True)
    for name, value in UP_SYSCTLS.items():
        with contextlib.suppress(FileNotFoundError):
            sysctl_path(name).write_text(value)


def has_node_address(addresses: Addresses) -> bool:
    result = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    return f" {addresses.node_ip}/32 " in result.stdout


def pod_processes() -> set[int]:
    """Every process in a kubepods cgroup: the pods' containers (and nothing else)."""
    pids: set[int] = set()
    for procs in CGROUP_ROOT.glob("*/kubepods/**/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def shims(layout: Layout) -> set[int]:
    """containerd-shim processes serving our containerd (they name its socket)."""
    socket = str(layout.containerd_socket)
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            line = command_line(int(proc.name))
            if "containerd-shim" in line and socket in line:
                found.add(int(proc.name))
    return found


def kill(pids: Iterable[int], timeout_s: float = 10.0) -> list[int]:
    """SIGKILLs ``pids`` and waits until they are gone; returns those still alive."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def node_mounts(layout: Layout) -> list[str]:
    return mounts_under(Path("/proc/self/mountinfo").read_text(), layout.mount_roots)


def unmount_node(layout: Layout) -> list[str]:
    """Unmounts what the node mounted; returns what stayed mounted."""
    for point in node_mounts(layout):
        if not _quiet("umount", point):
            _quiet("umount", "-l", point)
    return node_mounts(layout)


def remove_chains() -> None:
    for family, binary in IPTABLES.items():
        if shutil.which(binary) is None:
            continue
        for args in chain_cleanup(_save(family)):
            _quiet(binary, "-w", *args)


def remove_kubepods_cgroups() -> list[Path]:
    """Removes kubepods cgroups bottom-up; returns those that could not be removed."""
    left = []
    for top in CGROUP_ROOT.glob("*/kubepods"):
        for folder, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            try:
                Path(folder).rmdir()
            except OSError:
                left.append(Path(folder))
    return left


def restore(layout: Layout, addresses: Addresses) -> list[str]:
    """Undoes what `up` did to the host; returns what could not be undone (for the user)."""
    problems: list[str] = []
    left = unmount_node(layout)
    problems += [f"still mounted: {p}" for p in left]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _quiet("ip", "link", "del", BRIDGE)
    if has_node_address(addresses):
        _quiet("ip", "addr", "del", f"{addresses.node_ip}/32", "dev", "lo")
    remove_chains()
    problems += [f"cgroup not removable: {p}" for p in remove_kubepods_cgroups()]
    record = load_record(layout)
    if record is not None:
        for name, value in record.sysctls.items():
            with contextlib.suppress(OSError):
                sysctl_path(name).write_text(value)
        for path in record.absent_paths:
            if Path(path).is_dir():
                shutil.rmtree(path, ignore_errors=True)
        _remove_empty_tables(record)
        layout.host_record.unlink()
    return problems


def _remove_empty_tables(record: HostRecord) -> None:
    """iptables-nft creates a table on first use and never deletes it; drop the empty ones
    that were not there before `up`."""
    if shutil.which("nft") is None:
        return
    for family, table in record.absent_tables:
        if is_empty_table(_save(family), table):
            _quiet("nft", "delete", "table", family, table)
