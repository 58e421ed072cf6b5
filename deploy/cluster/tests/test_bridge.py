"""The bridge forwards the node address to the stack's loopback ports, and leaves nothing."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetalmlops.cluster.bridge import Bridge, forwards
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.process import is_alive

# Any 127/8 address is local on Linux: it stands in for the node address on `lo`.
NODE = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def echo_servers() -> Iterator[list[int]]:
    """Three loopback servers standing in for Kafka, MinIO and PostgreSQL: each answers a
    line with its port and the line."""
    servers = []
    for _ in range(3):
        server = socket.create_server(("127.0.0.1", free_port()))
        servers.append(server)

        def serve(listener: socket.socket = server) -> None:
            while True:
                try:
                    peer, _ = listener.accept()
                except OSError:
                    return
                with peer:
                    line = peer.recv(64)
                    peer.sendall(f"{listener.getsockname()[1]}:".encode() + line)

        threading.Thread(target=serve, daemon=True).start()
    yield [int(s.getsockname()[1]) for s in servers]
    for server in servers:
        server.close()


@pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat (make system-packages)")
def test_each_stack_port_answers_at_the_node_address(
    echo_servers: list[int], tmp_path: Path
) -> None:
    kafka, minio, postgres = echo_servers
    stack = StackConfig(
        home=tmp_path,
        node_address=NODE,
        kafka_cluster_port=kafka,
        minio_port=minio,
        postgres_port=postgres,
    )
    bridge = Bridge(stack, tmp_path / "run", tmp_path / "logs")
    bridge.up()
    try:
        bridge.up()  # idempotent: the running forwarders are kept
        pids = bridge.pids()
        assert all(pid is not None for pid in pids.values()), pids
        for forward in forwards(stack):
            with socket.create_connection((NODE, forward.port), timeout=5) as client:
                client.sendall(b"hello")
                assert client.recv(64) == f"{forward.port}:hello".encode()
    finally:
        bridge.down()
    assert all(pid is None for pid in bridge.pids().values())
    assert not any(is_alive(pid) for pid in pids.values() if pid is not None)
    assert not list((tmp_path / "run").glob("*.lock"))
