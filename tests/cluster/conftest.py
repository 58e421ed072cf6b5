"""The cluster the platform and dispatcher tests share: `fetalmlops cluster up` once for the
session (a cluster that was already up is used and left up), and, when the session started it,
`fetalmlops cluster down` at the end, which must leave nothing on the host: no process, shim,
mount, iptables chain, link, node address or kubepods cgroup, the kernel settings as before.

Every cluster test module asks for this fixture; the last of them to finish is followed by the
`down`, so nothing of what they ran (pods, a release, training Jobs) may survive it either.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fetalmlops.cluster import cluster, host
from fetalmlops.cluster.cli import app
from fetalmlops.cluster.configs import BRIDGE
from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.stack.process import is_alive


def leftovers(layout: Layout, pids: list[int], before: host.HostRecord) -> list[str]:
    """What a stopped cluster left on the host (nothing, when `down` did its work)."""
    found = [f"process {pid}" for pid in pids if is_alive(pid)]
    found += [f"shim {shim}" for shim in host.shims(layout)]
    found += [f"mount {mount}" for mount in host.node_mounts(layout)]
    for save in ("iptables-save", "ip6tables-save"):
        chains = subprocess.run([save], capture_output=True, text=True, check=True).stdout
        found += [f"{save}: {line}" for line in chains.splitlines()
                  if line.startswith((":KUBE-", ":CNI-"))]  # fmt: skip
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"link {BRIDGE}")
    if host.has_node_address(Addresses.default()):
        found.append("the node address on lo")
    found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob("*/kubepods")]
    after = host.observe()
    if after.sysctls != before.sysctls:
        found.append(f"kernel settings {after.sysctls} (before: {before.sysctls})")
    if set(after.absent_paths) != set(before.absent_paths):
        found.append(f"paths {set(before.absent_paths) - set(after.absent_paths)}")
    if layout.host_record.exists():
        found.append(f"the host record {layout.host_record}")
    if CliRunner().invoke(app, ["status"]).exit_code != 1:
        found.append("`fetalmlops cluster status` still reports a running cluster")
    return found


@pytest.fixture(scope="session")
def running_cluster() -> Iterator[Layout]:
    if os.geteuid() != 0:
        pytest.skip("a Kubernetes node needs root")
    missing = cluster.missing_programs()
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (Debian: {', '.join(set(missing.values()))})")
    layout = Layout.default()
    was_up = cluster.status(layout).running
    before = host.observe()
    began = time.monotonic()
    cluster.up(layout, progress=print)
    print(f"cluster up in {time.monotonic() - began:.1f} s")
    yield layout
    if was_up:
        return
    pod_pids = host.pod_processes()
    pids = [p.pid for p in cluster.status(layout).processes if p.pid is not None]
    pids += sorted(pod_pids)
    began = time.monotonic()
    problems = cluster.down(layout, progress=print)
    print(f"cluster down in {time.monotonic() - began:.1f} s")
    assert problems == []
    assert pod_pids, "the pods' processes should be in kubepods cgroups"
    assert leftovers(layout, pids, before) == []
