"""The little of the Kubernetes API the dispatcher needs, over plain HTTPS.

Not the `kubernetes` client package: the dispatcher makes one POST per request, and the
package's generated models would be most of the image's Python. Credentials are found the way
every client finds them: in a pod, the service account's token, CA and namespace under
`/var/run/secrets/kubernetes.io/serviceaccount/` and the API at `KUBERNETES_SERVICE_HOST:PORT`;
outside, a kubeconfig's context (token or client certificate, inline or by file).

Failures come in two kinds, as the consumer loop needs them: `ApiUnavailable` (no answer, a
timeout, 5xx, 429 throttling: an `Unavailable`, so the record waits for the API uncommitted,
never dead-lettered) and `ApiRefused`
(any other 4xx: the server read the request and will not take it). A refusal names the status,
the API's reason and the fields at fault, never the API's message, which quotes the values sent.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

from fetalmlops.common.bus import Unavailable

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# 429 is the API's priority-and-fairness throttling: a 4xx that says "later", not "never".
TRANSIENT_STATUS = 429


class ApiUnavailable(Unavailable):
    """The API did not take the call now (no answer, timeout, 5xx, 429); the call may be retried."""


class ApiRefused(Exception):
    """The API read the call and refused it (a 4xx other than 429)."""

    def __init__(self, status: int, reason: str, fields: tuple[str, ...] = ()) -> None:
        self.status, self.reason, self.fields = status, reason, fields
        at = f" at {', '.join(fields)}" if fields else ""
        super().__init__(f"{status} {reason}{at}")


class ConfigError(ValueError):
    """The credentials cannot be found or read."""


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to prove who we are to it."""

    server: str
    ca_pem: str | None = None  # None: the system's trust store
    token: Callable[[], str] | None = None  # read at each call: bound tokens are rotated
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    insecure: bool = False  # kubeconfig's insecure-skip-tls-verify
    namespace: str | None = None

    def with_token(self, token: str) -> Credentials:
        """The same server and CA, authenticated by ``token`` alone (a service account's)."""
        return replace(self, token=lambda: token, client_cert_pem=None, client_key_pem=None)


def in_cluster(
    root: Path = SERVICE_ACCOUNT, environ: Mapping[str, str] = os.environ
) -> Credentials:
    """The pod's service account, and the API its environment names."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigError(
            "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset): "
            "set FETALMLOPS_DISPATCHER_KUBECONFIG"
        )
    token_file, ca_file, namespace_file = root / "token", root / "ca.crt", root / "namespace"
    if not token_file.exists() or not ca_file.exists():
        raise ConfigError(f"no service account token and CA under {root} (automount disabled?)")
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    return Credentials(
        server=f"https://{host}:{port}",
        ca_pem=ca_file.read_text(),
        token=lambda: token_file.read_text().strip(),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else None,
    )


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """A kubeconfig's ``context`` (default: its current-context): token or client certificate,
    each given inline (`*-data`) or as a file relative to the kubeconfig."""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"kubeconfig {path}: {exc}") from None
    name = context or config.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context: name one")
    ctx = _named(config, "contexts", "context", name, path)
    cluster = _named(config, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(config, "users", "user", ctx.get("user"), path)
    if "exec" in user or "auth-provider" in user:
        raise ConfigError(
            f"kubeconfig {path}: user {ctx.get('user')!r} authenticates through a plugin, which "
            "this client does not run; give it a token or a client certificate"
        )
    where = path.parent
    token = user.get("token") or _file_text(user.get("tokenFile"), where)
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_pem=_pem(cluster, "certificate-authority", where),
        token=(lambda: str(token).strip()) if token else None,
        client_cert_pem=_pem(user, "client-certificate", where),
        client_key_pem=_pem(user, "client-key", where),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace"),
    )


def _named(config: Mapping[str, Any], kind: str, key: str, name: Any, path: Path) -> Any:
    for entry in config.get(kind) or []:
        if entry.get("name") == name:
            return entry.get(key) or {}
    raise ConfigError(f"kubeconfig {path} has no {key} named {name!r}")


def _file_text(name: str | None, where: Path) -> str | None:
    return None if name is None else (where / name).read_text()


def _pem(section: Mapping[str, Any], field: str, where: Path) -> str | None:
    if data := section.get(f"{field}-data"):
        return base64.b64decode(data).decode()
    return _file_text(section.get(field), where)


def ssl_context(credentials: Credentials) -> ssl.SSLContext:
    """Trust the cluster's CA; present the client certificate, if any."""
    context = ssl.create_default_context(cadata=credentials.ca_pem)
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if credentials.client_cert_pem and credentials.client_key_pem:
        # `load_cert_chain` reads only files: written to a folder only we may read, read, and
        # gone again.
        with tempfile.TemporaryDirectory(prefix="kubeconfig-") as folder:
            cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
            cert.write_text(credentials.client_cert_pem)
            key.write_text(credentials.client_key_pem)
            context.load_cert_chain(cert, key)
    return context


class KubernetesApi:
    """Calls to one API server with one identity."""

    def __init__(
        self,
        credentials: Credentials,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self._client = httpx.Client(
            base_url=credentials.server,
            verify=ssl_context(credentials),
            timeout=timeout_s,
            transport=transport,
        )

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON the API answered ``method path`` with; raises `ApiUnavailable` or
        `ApiRefused` as the module says."""
        headers = {"Accept": "application/json"}
        if self.credentials.token is not None:
            headers["Authorization"] = f"Bearer {self.credentials.token()}"
        try:
            response = self._client.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"{method} {path}: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code == TRANSIENT_STATUS:
            raise ApiUnavailable(f"{method} {path}: {response.status_code}")
        if response.status_code >= 400:
            raise refusal(response)
        return response.json() if response.content else None

    def create(self, path: str, body: Mapping[str, Any]) -> bool:
        """POST ``body`` to the collection at ``path``: True once stored, False when an object
        of its name exists already (409 AlreadyExists)."""
        try:
            self.call("POST", path, body)
        except ApiRefused as exc:
            if exc.status == httpx.codes.CONFLICT and exc.reason == "AlreadyExists":
                return False
            raise
        return True

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> bool:
        """Create ``job``; True when the API stored it now, False when it existed already."""
        return self.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    def version(self) -> None:
        """Raises unless the API answers (readiness)."""
        self.call("GET", "/version")

    def close(self) -> None:
        self._client.close()


def refusal(response: httpx.Response) -> ApiRefused:
    """The API's `Status` as an `ApiRefused`: its reason and field paths, not its message."""
    try:
        status = response.json()
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    reason = str(status.get("reason") or response.reason_phrase or "refused")
    causes = (status.get("details") or {}).get("causes") or []
    fields = tuple(
        sorted({str(c["field"]) for c in causes if isinstance(c, dict) and "field" in c})
    )
    return ApiRefused(response.status_code, reason, fields)
