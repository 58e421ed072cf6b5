"""The report API behind its scope, and the dashboard as a real browser renders it: Debian's
Chromium, headless, must lay out every plot the report calls for."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from PIL import Image
from typer.testing import CliRunner

from fetalmlops.common.db import session_scope
from fetalmlops.monitor import dashboard, reports
from fetalmlops.monitor.api import add_routes
from fetalmlops.monitor.cli import app
from fetalmlops.monitor.stream import Monitor
from fetalmlops.v1 import feedback_pb2, labels_pb2

from .served import WINDOW, drift_reference, monitor_at, predictions, records, stream, trained

TOKEN = "dashboard-reader"
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Monitor:
    """A version through a scanner change, with clinicians' feedback on part of it."""
    monitor = monitor_at(tmp_path_factory.mktemp("monitor"), drift_reference())
    trained(monitor)
    served = predictions(8 * WINDOW, seed=5) + predictions(6 * WINDOW, seed=6, brightness=0.1)
    stream(monitor, served)
    planes = list(labels_pb2.Plane.values())[1:]  # the proto's, without UNSPECIFIED
    feedback = [
        (e.prediction_id, feedback_pb2.FeedbackGiven(
            prediction_id=e.prediction_id, true_plane=planes[i % 5 if i % 3 else 0], reviewer="r1"
        ))
        for i, e in enumerate(served[::4])
    ]  # fmt: skip
    for record in records(monitor.settings.topics.feedback, feedback):
        monitor.on_feedback(record)
    return monitor


@pytest.fixture(scope="module")
def url(watched: Monitor) -> Iterator[str]:
    app = FastAPI()
    add_routes(
        app, watched.engine, watched.own.model_copy(update={"tokens": {TOKEN: ["reports:read"]}})
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_reports_need_the_reports_scope(url: str) -> None:
    assert httpx.get(f"{url}/v1/reports").status_code == 401
    wrong = httpx.get(f"{url}/v1/reports", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    answer = httpx.get(f"{url}/v1/reports", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    summary = answer.json()
    assert [a["segment"] for a in summary["alarms"]] == ["Sonora/X9"]
    (performance,) = summary["performance"]
    assert performance["feedback"] == 14 * WINDOW // 4
    assert 0 <= performance["measured"]["macro_f1"]["value"] <= 1


def test_the_dashboard_renders_every_plot_in_chromium(
    watched: Monitor, url: str, tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is missing: make system-packages installs it")
    with session_scope(watched.engine) as session:
        expected = dashboard.plot_names(reports.summary(session, 56.0))
    page = tmp_path / "dashboard.html"
    page.write_text(
        httpx.get(f"{url}/dashboard", headers={"Authorization": f"Bearer {TOKEN}"}).text
    )
    browse = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--virtual-time-budget=5000", "--window-size=1400,3000"]  # fmt: skip
    dom = subprocess.run(
        [*browse, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    rendered = re.search(r'<pre id="rendered">(.*?)</pre>', dom, re.S)
    assert rendered is not None, "the page's script never ran"
    sizes = dict(line.rsplit(" ", 1) for line in rendered.group(1).splitlines())
    assert sorted(sizes) == sorted(expected)
    for name, size in sizes.items():
        width, height = map(int, size.split("x"))
        assert width > 200 and height > 100, f"{name} laid out at {size}"

    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [*browse, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # drawn, not a blank page


def test_the_terminal_report_says_what_the_api_says(
    watched: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FETALMLOPS_DATABASE_URL", watched.settings.database_url)
    runner = CliRunner()
    shown = runner.invoke(app, ["report"])
    assert shown.exit_code == 0, shown.output
    assert "fetal-planes v1: drift alarm calibrated" in shown.output
    assert "Sonora/X9 episode 1" in shown.output and "retraining requested" in shown.output
    as_json = json.loads(runner.invoke(app, ["report", "--json"]).output)
    with session_scope(watched.engine) as session:
        assert as_json == json.loads(json.dumps(reports.summary(session, 56.0)))
