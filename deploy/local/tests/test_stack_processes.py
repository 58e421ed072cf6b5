"""Ports, pidfiles and missing tools: the checks that guard `up`, without starting servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetalmlops.stack import stack
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError
from fetalmlops.stack.postgres import data_dir
from fetalmlops.stack.process import (
    Daemon,
    ensure_ports_free,
    port_in_use,
    require_executable,
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_listening_socket_is_detected(taken_port: int) -> None:
    assert port_in_use(taken_port)


def test_a_bound_but_not_listening_socket_is_detected() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        assert port_in_use(holder.getsockname()[1])


def test_a_released_port_is_free() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    assert not port_in_use(port)


def test_taken_port_error_names_port_component_and_variable(
    tmp_path: Path, taken_port: int
) -> None:
    config = StackConfig(home=tmp_path, minio_console_port=taken_port)
    port = config.port("minio", "console", "minio_console_port")
    with pytest.raises(StackError) as error:
        ensure_ports_free([port])
    message = str(error.value)
    assert str(taken_port) in message
    assert "minio console" in message
    assert "FETALMLOPS_STACK_MINIO_CONSOLE_PORT" in message


def test_stale_pidfile_is_cleaned_up(tmp_path: Path) -> None:
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pidfile = tmp_path / "kafka.pid"
    pidfile.write_text(exited.stdout)
    daemon = Daemon("kafka", pidfile, tmp_path / "kafka.log", marker=str(tmp_path))
    assert daemon.pid() is None
    assert not pidfile.exists()


def test_a_live_process_that_is_not_ours_is_not_adopted(tmp_path: Path) -> None:
    pidfile = tmp_path / "minio.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # this pytest process: alive, not MinIO
    daemon = Daemon("minio", pidfile, tmp_path / "minio.log", marker=str(tmp_path / "data"))
    assert daemon.pid() is None


def test_missing_tool_error_says_how_to_install() -> None:
    with pytest.raises(StackError, match="apt-get install -y postgresql"):
        require_executable("no-such-pg_ctl", "e.g. `apt-get install -y postgresql`.")


def test_status_of_a_fresh_home_is_all_stopped_and_writes_nothing(tmp_path: Path) -> None:
    config = StackConfig(home=tmp_path / "home")
    statuses = stack.status(config)
    assert [s.name for s in statuses] == ["kafka", "minio", "postgres"]
    assert not any(s.running for s in statuses)
    assert all(s.log.parent == config.logs for s in statuses)
    assert not config.home.exists()


def test_each_home_gets_its_own_postgres_cluster(tmp_path: Path) -> None:
    first = data_dir(StackConfig(home=tmp_path / "a"))
    second = data_dir(StackConfig(home=tmp_path / "b"))
    assert first != second
