"""`make demo`, at the size CI affords, with each step's outcome checked, not only its exit code.

The demo (deploy/local/demo/demo.py) starts `fetalmlops up` on the embedded stand-ins and plays
the hospital around it over the platform's public doors. Shown: every pushed study stored over
C-STORE and STOW-RS; every planted header value found in the raw zone and none anywhere else;
v1 trained, gated and promoted; a drift alarm on the portable scanner; v2 trained on its newly
labelled studies, through the gate, shadow and canary, promoted; v2 answering the portable
scanner better than v1, by the clinicians' own feedback; no request failed; and once the demo
ends, `fetalmlops up` has stopped with no process or port left behind.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fetalmlops.common.settings import Settings
from fetalmlops.stack.stack import scratch_database

DEMO = Path(__file__).parents[2] / "deploy" / "local" / "demo" / "demo.py"
PORTABLE = "PocketEcho/PocketScan C3"

pytestmark = pytest.mark.timeout(1500)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on."""
    for _ in range(100):
        first = random.randrange(20_000, 32_000)  # below the ephemeral range
        if all(bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError("no free run of ports")


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


Demo = tuple[dict[str, Any], str, list[int]]


def run_demo(work: Path, *options: str) -> Demo:
    """The demo at CI's size, to its end: its report, what it printed, the ports it used."""
    http, scp = free_ports(5), free_ports(1)
    report = work / "report.json"
    finished = subprocess.run(
        [sys.executable, str(DEMO), "--small", "--exit", "--data-dir", str(work / "platform"),
         "--report", str(report), "--http-port", str(http), "--scp-port", str(scp), *options],
        capture_output=True, text=True, timeout=1400,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-5000:] + finished.stderr[-5000:]
    return json.loads(report.read_text()), finished.stdout, [*range(http, http + 5), scp]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    work = tmp_path_factory.mktemp("demo")
    return run_demo(work, "--screenshot", str(work / "dashboard.png"))


def test_every_pushed_study_is_stored_and_its_phi_stays_in_the_raw_zone(
    demo: Demo,
) -> None:
    report, _, _ = demo
    pushed = report["pushed"]
    assert pushed["cstore"] + pushed["stowrs"] == pushed["studies"] > 0
    assert pushed["cstore"] > 0 and pushed["stowrs"] > 0
    phi = report["phi"]
    # Every planted value the files carry as bytes (the banner's lines are pixels) is found
    # in the raw zone, so the search works; and not one planted value is in another channel.
    assert phi["in_raw_zone"] == phi["written"] > 20 and phi["planted"] >= phi["written"]
    assert phi["elsewhere"] == {"objects": 0, "table rows": 0, "log": 0, "metrics": 0}


def test_v1_then_a_drift_alarm_then_v2_through_shadow_and_canary(
    demo: Demo,
) -> None:
    report, output, _ = demo
    v1, v2 = report["v1"], report["v2"]
    assert v1["version"] == 1 and v1["gate"]["passed"] and v1["gate"]["champion_version"] == 0
    assert v1["stage"] == "production"  # when v1 was read; v2 replaced it later
    assert report["alarm"]["segment"] == PORTABLE and report["alarm"]["model_version"] == 1
    assert v2["stage"] == "production" and v2["gate"]["passed"]
    assert v2["gate"]["champion_version"] == 1 and v2["gate"]["drift_segment"] == PORTABLE
    assert report["rollout"]["phase"] == "promoted"
    assert [p.split(" ")[0] for p in report["phases"]] == ["shadow", "canary", "promoted"]
    assert "drift alarm on PocketEcho/PocketScan C3" in output


def test_feedback_shows_v2_recovers_the_portable_scanner_and_no_request_failed(
    demo: Demo,
) -> None:
    report, output, _ = demo
    v1, v2 = report["recovery"]["v1"], report["recovery"]["v2"]
    assert v1["answers"] >= 20 and v2["answers"] >= 30
    assert v2["macro_f1"] > v1["macro_f1"] + 0.1, report["recovery"]
    assert report["failures"] == []
    assert f"the whole story in {report['seconds']:.0f} s" in output


def test_once_the_demo_ends_no_process_or_port_is_left(
    demo: Demo,
) -> None:
    _, _, ports = demo
    assert all(bindable(port) for port in ports)
    running = subprocess.run(["pgrep", "-f", "fetalmlops up --data-dir"], capture_output=True)
    assert running.stdout == b""


@pytest.mark.stack
def test_the_same_story_runs_on_the_real_stack(
    stack_settings: Callable[[str | None], Settings], tmp_path: Path
) -> None:
    """`fetalmlops up --stack`: Kafka, MinIO and PostgreSQL (a database of the run's own, so
    that its catalog holds only the demo's studies; its own model name on the shared topics)."""
    stack_settings(None)  # fails the test when the stack is down
    tag = uuid.uuid4().hex[:8]
    with scratch_database(f"fetalmlops_demo_{tag}") as database:
        report, output, ports = run_demo(
            tmp_path, "--stack", "--database", database, "--model", f"demo-planes-{tag}"
        )
    assert "stack platform up" in output
    assert report["phi"]["in_raw_zone"] == report["phi"]["written"] > 20
    assert set(report["phi"]["elsewhere"].values()) == {0}
    assert report["alarm"]["segment"] == PORTABLE
    assert report["v2"]["stage"] == "production" and report["rollout"]["phase"] == "promoted"
    recovery = report["recovery"]
    assert recovery["v2"]["macro_f1"] > recovery["v1"]["macro_f1"] + 0.1, recovery
    assert report["failures"] == []
    assert all(bindable(port) for port in ports)


def test_the_dashboard_is_drawn_from_the_demos_own_run(demo: Demo) -> None:
    """What `make screenshot` puts in the README: Chromium's picture of the live dashboard."""
    report, output, _ = demo
    assert "the dashboard as Chromium draws it" in output
    pixels = np.asarray(Image.open(report["screenshot"]).convert("L"))
    assert pixels.shape == (2200, 1400) and pixels.std() > 10  # drawn, not a blank page
