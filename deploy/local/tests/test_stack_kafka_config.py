"""Kafka's pinned jars and rendered server.properties, without starting a broker."""

from __future__ import annotations

import re
from pathlib import Path

from fetalmlops.stack.kafka import (
    RESOURCES,
    broker_pom,
    broker_version,
    missing_topics,
    new_cluster_id,
    render_server_properties,
)


def render() -> dict[str, str]:
    text = render_server_properties(
        (RESOURCES / "kafka-server.properties").read_text(),
        broker_port=29092,
        controller_port=29093,
        cluster_port=29094,
        node_address="10.250.0.1",
        log_dir=Path("/data/kafka"),
        num_partitions=5,
    )
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_server_properties_is_a_single_kraft_node_on_loopback() -> None:
    """Every listener binds loopback; the cluster's advertises the node address, where
    `fetalmlops cluster` forwards it to loopback."""
    props = render()
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,CLUSTER://127.0.0.1:29094,CONTROLLER://127.0.0.1:29093"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,CLUSTER://10.250.0.1:29094"
    )
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert props["log.dirs"] == "/data/kafka"
    assert props["num.partitions"] == "5"


def test_internal_topics_fit_one_broker() -> None:
    props = render()
    factors = {k: v for k, v in props.items() if k.endswith((".replication.factor", ".min.isr"))}
    assert factors
    assert set(factors.values()) == {"1"}


def test_no_placeholder_is_left_unrendered() -> None:
    assert not any("$" in value for value in render().values())


def test_the_pom_pins_the_broker_version() -> None:
    assert broker_version(broker_pom()) == "4.3.1"


def test_cluster_id_has_kafkas_uuid_shape() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) and not i.startswith("-") for i in ids)


def test_only_missing_topics_are_created_in_declared_order() -> None:
    assert missing_topics(["a", "b", "c"], {"b", "other"}) == ["a", "c"]
