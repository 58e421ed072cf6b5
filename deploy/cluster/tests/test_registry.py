"""The registry images move through: its configuration and where an image lives in it (the
copies themselves are the cluster tests', which run every image they import)."""

from __future__ import annotations

from pathlib import Path

from fetalmlops.cluster import registry


def test_the_registry_listens_on_loopback_and_may_delete() -> None:
    config = registry.config(Path("/cache/registry"), 19500)
    assert config["http"]["addr"] == "127.0.0.1:19500"
    assert config["storage"]["filesystem"]["rootdirectory"] == "/cache/registry"
    assert config["storage"]["delete"]["enabled"] is True


def test_an_image_keeps_its_path_under_the_registrys_address() -> None:
    assert (
        registry.remote("127.0.0.1:19500", "localhost/fetalmlops/ingest:0.1.0")
        == "127.0.0.1:19500/fetalmlops/ingest:0.1.0"
    )
    assert (
        registry.remote("127.0.0.1:19500", "localhost/pause:local") == "127.0.0.1:19500/pause:local"
    )
