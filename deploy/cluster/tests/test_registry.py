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


def test_an_import_supersedes_the_other_names_of_its_repositories_only() -> None:
    held = [
        "localhost/fetalmlops/ingest:0.1.0",
        "localhost/fetalmlops/ingest:tilt-build-1",
        "localhost/fetalmlops/ingest:tilt-build-2",
        "localhost/fetalmlops/trainer:tilt-build-1",  # a repository this import did not touch
        "localhost/fetalmlops/torch-base:2.15.0",
        "localhost/fetalmlops/ingest@sha256:" + "a" * 64,  # containerd's digest names
    ]
    kept = ["localhost/fetalmlops/ingest:0.1.0", "localhost/fetalmlops/ingest:tilt-build-3"]
    assert registry.superseded(held, kept) == [
        "localhost/fetalmlops/ingest:tilt-build-1",
        "localhost/fetalmlops/ingest:tilt-build-2",
    ]
    assert registry.superseded(held, []) == []
    assert registry.repository("localhost/fetalmlops/ingest:0.1.0") == "localhost/fetalmlops/ingest"


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGES = f"""REF TYPE DIGEST SIZE PLATFORMS LABELS
localhost/fetalmlops/ingest:0.1.0 {MANIFEST} sha256:m2 189.3 MiB linux/amd64 -
sha256:c1 {MANIFEST} sha256:m1 189.3 MiB linux/amd64 io.cri-containerd.image=managed
sha256:c2 {MANIFEST} sha256:m2 189.3 MiB linux/amd64 io.cri-containerd.image=managed
"""
# `ctr content ls`: the age has spaces; a label's value may have commas.
REF = "containerd.io/gc.ref.content"
CONTENT = f"""DIGEST\tSIZE\tAGE\tLABELS
sha256:m1\t1kB\t2 hours\t{REF}.config=sha256:c1,{REF}.l.0=sha256:l1
sha256:m2\t1kB\tAbout an hour\tcontainerd.io/distribution.source.x=a/b,c/d,{REF}.config=sha256:c2
sha256:c1\t1kB\t2 hours\tcontainerd.io/gc.ref.snapshot.overlayfs=sha256:s1
sha256:l1\t9MB\t2 hours\t
"""


def test_the_cris_id_of_an_image_no_name_holds_is_orphaned() -> None:
    # sha256:c1 was the id of an ingest build whose name moved on to another (m2, config c2).
    assert registry.orphaned_ids(IMAGES, CONTENT) == ["sha256:c1"]
    assert registry.orphaned_ids(IMAGES.replace("sha256:m2 189", "sha256:m1 189", 1), CONTENT) == [
        "sha256:c2"
    ]
