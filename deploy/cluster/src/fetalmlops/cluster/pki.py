"""The cluster's certificate authority, component certificates and kubeconfigs, made with openssl.

Kubernetes reads identity from certificates: the Common Name is the user, the Organization the
group (`system:masters` is cluster-admin, `system:nodes` lets the Node authorizer admit the
kubelet). The table below is what kubeadm issues for a single node, minus the front proxy,
which nothing here uses. Certificates are made once and kept across `down`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import yaml

from fetalmlops.cluster.layout import Addresses, Layout
from fetalmlops.stack.process import require_executable, run_logged

VALID_DAYS = 3650
OPENSSL_HINT = "`apt-get install -y openssl`"
KSERVE_WEBHOOK_SERVICE = "kserve-webhook-server-service.kserve.svc"


@dataclass(frozen=True)
class Certificate:
    """A key pair signed by the cluster CA. With ``sans`` it also serves TLS."""

    name: str
    common_name: str
    organization: str = ""
    sans: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        return f"/CN={self.common_name}" + (f"/O={self.organization}" if self.organization else "")

    def extensions(self) -> str:
        """The X.509 v3 extensions openssl adds when the CA signs it."""
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
        if self.sans:
            lines.append("extendedKeyUsage=serverAuth,clientAuth")
            lines.append(f"subjectAltName={','.join(self.sans)}")
        else:
            lines.append("extendedKeyUsage=clientAuth")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Identity:
    """Who a kubeconfig authenticates as: a certificate of the table, and the user it names."""

    certificate: str
    user: str


def certificates(addresses: Addresses) -> tuple[Certificate, ...]:
    domain = addresses.cluster_domain
    apiserver_names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{domain}", "localhost"]  # fmt: skip
    apiserver_ips = ["127.0.0.1", addresses.node_ip, addresses.kubernetes_service_ip]
    node = addresses.node_name
    return (
        Certificate(
            "apiserver",
            "kube-apiserver",
            sans=tuple([f"DNS:{n}" for n in apiserver_names] + [f"IP:{i}" for i in apiserver_ips]),
        ),
        Certificate("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
        Certificate("admin", "kubernetes-admin", "system:masters"),
        Certificate("controller-manager", "system:kube-controller-manager"),
        Certificate("scheduler", "system:kube-scheduler"),
        Certificate("kube-proxy", "system:kube-proxy"),
        Certificate(
            "kubelet",
            f"system:node:{node}",
            "system:nodes",
            (f"DNS:{node}", "DNS:localhost", "IP:127.0.0.1", f"IP:{addresses.node_ip}"),
        ),
        # Served by the KServe controller's admission webhooks; made here so no cert-manager
        # has to run. The webhook configurations trust it through the CA's certificate.
        Certificate(
            "kserve-webhook",
            KSERVE_WEBHOOK_SERVICE,
            sans=(f"DNS:{KSERVE_WEBHOOK_SERVICE}", f"DNS:{KSERVE_WEBHOOK_SERVICE}.{domain}"),
        ),
    )


def identities(addresses: Addresses) -> dict[str, Identity]:
    """The kubeconfig of each client of the apiserver, by file stem."""
    return {
        "admin": Identity("admin", "kubernetes-admin"),
        "controller-manager": Identity("controller-manager", "system:kube-controller-manager"),
        "scheduler": Identity("scheduler", "system:kube-scheduler"),
        "kube-proxy": Identity("kube-proxy", "system:kube-proxy"),
        "kubelet": Identity("kubelet", f"system:node:{addresses.node_name}"),
    }


def kubeconfig(server: str, ca: bytes, certificate: bytes, key: bytes, user: str) -> str:
    """A kubeconfig with everything embedded, so it stays valid wherever it is copied."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fetalmlops",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(certificate), "client-key-data": b64(key)},
            }
        ],
        "contexts": [{"name": "fetalmlops", "context": {"cluster": "fetalmlops", "user": user}}],
        "current-context": "fetalmlops",
    }
    return str(yaml.safe_dump(document, sort_keys=False))


class Authority:
    """The CA under ``layout.pki`` and what it has signed."""

    def __init__(self, layout: Layout, addresses: Addresses) -> None:
        self.layout = layout
        self.addresses = addresses
        self.dir = layout.pki
        self.log = layout.logs / "pki.log"

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def kubeconfig(self, name: str) -> Path:
        return self.layout.admin_kubeconfig if name == "admin" else self.dir / f"{name}.kubeconfig"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "sa.pub"

    def _openssl(self, *args: str) -> None:
        openssl = require_executable("openssl", OPENSSL_HINT)
        run_logged([openssl, *args], self.log, what=f"openssl {args[0]}")

    def ensure(self) -> None:
        """Makes whatever is missing; a new CA re-issues everything it would have signed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.crt("ca").exists():
            for old in self.dir.iterdir():
                old.unlink()
            self.layout.admin_kubeconfig.unlink(missing_ok=True)
            self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(VALID_DAYS),
                          "-keyout", str(self.key("ca")), "-out", str(self.crt("ca")),
                          "-subj", "/CN=fetalmlops-cluster-ca")  # fmt: skip
        if not self.service_account_pub.exists():
            self._openssl("genrsa", "-out", str(self.service_account_key), "2048")
            self._openssl("rsa", "-in", str(self.service_account_key), "-pubout",
                          "-out", str(self.service_account_pub))  # fmt: skip
        for certificate in certificates(self.addresses):
            if not self.crt(certificate.name).exists():
                self._issue(certificate)
        for name, identity in identities(self.addresses).items():
            path = self.kubeconfig(name)
            if not path.exists():
                path.write_text(
                    kubeconfig(
                        self.addresses.apiserver_url,
                        self.crt("ca").read_bytes(),
                        self.crt(identity.certificate).read_bytes(),
                        self.key(identity.certificate).read_bytes(),
                        identity.user,
                    )
                )
                path.chmod(0o600)

    def _issue(self, certificate: Certificate) -> None:
        name = certificate.name
        csr, ext = self.dir / f"{name}.csr", self.dir / f"{name}.ext"
        ext.write_text(certificate.extensions())
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key(name)),
                      "-out", str(csr), "-subj", certificate.subject)  # fmt: skip
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.crt("ca")),
                      "-CAkey", str(self.key("ca")), "-CAcreateserial", "-days", str(VALID_DAYS),
                      "-out", str(self.crt(name)), "-extfile", str(ext))  # fmt: skip
        csr.unlink()
        ext.unlink()
