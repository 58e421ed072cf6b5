"""The wrapper modules Kubernetes, etcd and KServe are built from."""

from __future__ import annotations

from pathlib import Path

from fetalmlops.cluster.builds import (
    ETCD_VERSION,
    KUBERNETES_VERSION,
    STAGING_VERSION,
    Binaries,
    etcd_go_mod,
    kserve_go_mod,
    kubernetes_go_mod,
    kubernetes_ldflags,
    staging_modules,
)
from fetalmlops.cluster.layout import Layout

# An excerpt of k8s.io/kubernetes v1.34's own go.mod: requires, then the staging replaces.
KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

go 1.24.0

require (
	github.com/blang/semver/v4 v4.0.0
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/apiextensions-apiserver => ./staging/src/k8s.io/apiextensions-apiserver
	k8s.io/client-go => ./staging/src/k8s.io/client-go
	k8s.io/cri-client => ./staging/src/k8s.io/cri-client
)
"""


def test_staging_modules_are_read_from_the_replace_block() -> None:
    assert staging_modules(KUBERNETES_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/apiextensions-apiserver",
        "k8s.io/client-go",
        "k8s.io/cri-client",
    ]


def test_the_kubernetes_wrapper_replaces_staging_by_published_versions() -> None:
    text = kubernetes_go_mod(KUBERNETES_GO_MOD)
    assert f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n" in text
    assert f"\tk8s.io/client-go => k8s.io/client-go {STAGING_VERSION}\n" in text
    assert "./staging" not in text
    assert "github.com/blang" not in text  # requirements come from `go get`, not from here


def test_the_etcd_wrapper_pins_every_sibling_module_to_the_same_release() -> None:
    text = etcd_go_mod()
    assert f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}" in text
    assert text.count("=> go.etcd.io/etcd/") == 4
    assert text.count(ETCD_VERSION) == 5


def test_the_kserve_wrapper_keeps_kserves_controller_runtime_replace() -> None:
    assert (
        "\tsigs.k8s.io/controller-runtime => sigs.k8s.io/controller-runtime v0.19.7\n"
        in kserve_go_mod()
    )


def test_version_strings_are_stamped_into_both_version_packages() -> None:
    flags = kubernetes_ldflags("2026-01-01T00:00:00Z")
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {package}.gitVersion={KUBERNETES_VERSION}" in flags
        assert f"-X {package}.gitMinor=34" in flags


def test_binaries_are_versioned_so_a_new_pin_builds_afresh() -> None:
    binaries = Binaries(Layout(Path("/c")))
    assert binaries.kube("kubelet") == Path(
        f"/c/cluster/bin/kubernetes-{KUBERNETES_VERSION}/kubelet"
    )
    assert binaries.etcd.name == f"etcd-{ETCD_VERSION}"


def test_module_folders_escape_capitals_as_the_module_cache_does() -> None:
    binaries = Binaries(Layout(Path("/c")))
    folder = binaries.module_dir("github.com/Azure/go-autorest", "v1.0.0")
    assert folder.name == "go-autorest@v1.0.0"
    assert folder.parent.name == "!azure"
