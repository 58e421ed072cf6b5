"""`fetalmlops up`: every service answering with its health in one table, and Ctrl-C leaving
nothing behind; its secrets made once per data directory."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fetalmlops.common.db import ModelStage, ModelVersion, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.up.endpoints import rows, table
from fetalmlops.up.layout import SERVICES, Layout, Ports, embedded_values, load_or_make_secrets
from fetalmlops.up.services import prepared, production

FETALMLOPS = Path(sys.executable).with_name("fetalmlops")


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_run(count: int) -> int:
    for _ in range(100):
        first = random.randrange(20_000, 32_000)  # below the ephemeral range
        if all(bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError("no free run of ports")


def test_secrets_are_made_once_and_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.json"
    made = load_or_make_secrets(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_make_secrets(path) == made
    assert made.token != load_or_make_secrets(tmp_path / "other.json").token


def test_each_service_has_its_port_and_the_table_names_every_door() -> None:
    ports = Ports(9000, 11112)
    assert [ports.http(s) for s in SERVICES] == [9000, 9001, 9002, 9003, 9004]
    document = {
        "services": {s: f"http://127.0.0.1:{ports.http(s)}" for s in SERVICES},
        "dicom": {"host": "127.0.0.1", "port": 11112, "ae_title": "FETALMLOPS"},
        "dicomweb": "http://127.0.0.1:9000/dicomweb",
        "predict": "http://127.0.0.1:9003/v1/models/m:predict",
        "dashboard": "http://127.0.0.1:9004/dashboard",
    }
    drawn = table(rows(document, dict.fromkeys(SERVICES, "ready") | {"inference": "down"}))
    assert "C-STORE SCP FETALMLOPS@127.0.0.1:11112" in drawn
    assert "dashboard http://127.0.0.1:9004/dashboard" in drawn
    lines = drawn.splitlines()
    assert lines[0].split() == ["SERVICE", "ENDPOINT", "HEALTH"]
    assert any(line.startswith("inference") and line.endswith("down") for line in lines)


@pytest.mark.timeout(300)
def test_up_serves_every_service_and_ctrl_c_leaves_no_process_or_port(tmp_path: Path) -> None:
    http, scp = free_run(5), free_run(1)
    data = tmp_path / "platform"
    process = subprocess.Popen(
        [str(FETALMLOPS), "up", "--data-dir", str(data), "--http-port", str(http),
         "--scp-port", str(scp)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ | {"COLUMNS": "200"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not Layout(data).endpoints.exists():
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no endpoints.json"
            time.sleep(0.5)
        document = json.loads(Layout(data).endpoints.read_text())
        assert document["backend"] == "embedded"
        for name in SERVICES:
            assert httpx.get(f"{document['services'][name]}/healthz").status_code == 200
        ready = httpx.get(f"{document['services']['inference']}/readyz")
        assert ready.status_code == 503 and "first promoted version" in ready.text
        assert httpx.get(document["dashboard"]).status_code == 200
        with socket.create_connection(("127.0.0.1", scp), timeout=5):
            pass  # the SCP accepts associations' connections
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 0, output
    for name in SERVICES:
        assert name in output
    assert "unready: model: LookupError: waiting for its first promoted version" in output
    assert "stopped: every service" in output
    assert all(bindable(port) for port in [*range(http, http + 5), scp])
    assert not Layout(data).endpoints.exists()


def test_a_restart_on_the_embedded_bus_serves_the_registrys_production_version(
    tmp_path: Path,
) -> None:
    """The embedded bus keeps no promotion across restarts: the registry is read instead."""
    engine = prepared(Settings(**embedded_values(Layout(tmp_path)))).engine
    assert production(engine, "planes") is None
    with session_scope(engine) as session:
        for version, stage in [(1, ModelStage.ARCHIVED), (2, ModelStage.PRODUCTION)]:
            session.add(
                ModelVersion(
                    model_name="planes", version=version, stage=stage,
                    storage_uri=f"s3://fetal-models/planes/v{version}/",
                )
            )  # fmt: skip
        session.add(
            ModelVersion(model_name="other", version=7, stage=ModelStage.PRODUCTION,
                         storage_uri="s3://fetal-models/other/v7/")
        )  # fmt: skip
    assert production(engine, "planes") == "s3://fetal-models/planes/v2/"
