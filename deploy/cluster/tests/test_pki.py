"""Certificates and kubeconfigs: the table, and a real CA made by openssl."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.cluster.pki import Authority, Certificate, certificates, kubeconfig


def test_the_apiserver_answers_at_every_name_pods_and_the_host_use() -> None:
    apiserver = next(c for c in certificates(Addresses()) if c.name == "apiserver")
    for name in ("DNS:kubernetes.default.svc.cluster.local", "IP:10.96.0.1", "IP:10.250.0.1"):
        assert name in apiserver.sans


def test_the_kubelet_is_a_node_and_the_admin_a_master() -> None:
    table = {c.name: c for c in certificates(Addresses(node_name="n7"))}
    assert table["kubelet"].subject == "/CN=system:node:n7/O=system:nodes"
    assert table["admin"].organization == "system:masters"


def test_client_certificates_cannot_serve() -> None:
    client = Certificate("scheduler", "system:kube-scheduler").extensions()
    server = Certificate("x", "x", sans=("DNS:x",)).extensions()
    assert "extendedKeyUsage=clientAuth\n" in client
    assert "serverAuth" in server and "subjectAltName=DNS:x" in server


def test_a_kubeconfig_embeds_its_credentials() -> None:
    text = kubeconfig("https://10.250.0.1:6443", b"CA", b"CRT", b"KEY", "kubernetes-admin")
    document = yaml.safe_load(text)
    cluster = document["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.250.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert document["contexts"][0]["context"]["user"] == "kubernetes-admin"


@pytest.mark.needs("openssl")
def test_openssl_issues_certificates_the_ca_verifies(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    authority = Authority(layout, Addresses())
    authority.ensure()
    for certificate in certificates(Addresses()):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", authority.crt("ca"), authority.crt(certificate.name)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", authority.crt("apiserver")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:10.96.0.1" in text
    assert layout.admin_kubeconfig.stat().st_mode & 0o077 == 0
    # A second ensure keeps what exists: same CA, same certificates.
    before = authority.crt("apiserver").read_bytes()
    authority.ensure()
    assert authority.crt("apiserver").read_bytes() == before
