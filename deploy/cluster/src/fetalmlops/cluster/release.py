"""The project on the local cluster: its Secrets made from the local stack's credentials, then
the chart, with `deploy/helm/values/local-cluster.yaml`.

The chart only names Secrets (`existingSecret`); a platform team makes them from its own
vault. Here they are made from what `fetalmlops stack` generated, each service with its own
MinIO user and PostgreSQL role as on the stack, the endpoints moved to the node address where
`bridge` forwards the stack's ports, and bearer tokens generated once per cache (the operator's
`token`, holding every scope, kept readable by its owner only in ``tokens.json``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from fetalmlops.stack import stack
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError

NAMESPACE = "fetalmlops"
RELEASE = "fetalmlops"
# The chart of the checkout this package is installed from (editable, as `make setup` does).
CHART = Path(__file__).resolve().parents[5] / "deploy" / "helm" / "fetalmlops"
LOCAL_VALUES = CHART.parent / "values" / "local-cluster.yaml"

# What the operator's token may do at each service (the scopes each service checks).
SCOPES: dict[str, list[str]] = {
    "ingest": ["images:write", "labels:write", "feedback:write"],
    "trainer": ["training:write"],
    "monitor": ["reports:read", "models:approve"],
}


@dataclass(frozen=True)
class Tokens:
    operator: str  # every scope at every service, and an inference client
    anonymizer_secret: str  # the pseudonymisation key

    @classmethod
    def load_or_make(cls, path: Path) -> Tokens:
        if path.exists():
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        made = cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(made)), encoding="utf-8")
        return made


def at_node(values: Mapping[str, Any], stack_config: StackConfig) -> dict[str, str]:
    """A service's stack credentials (`stack.settings_values`) as environment variables, its
    endpoints moved from loopback to the node address (Kafka to the cluster's listener)."""
    node = stack_config.node_address
    database = urllib.parse.urlsplit(str(values["database_url"]))
    credentials, _, _ = database.netloc.rpartition("@")
    moved = database._replace(netloc=f"{credentials}@{node}:{stack_config.postgres_port}")
    return {
        "FETALMLOPS_DATABASE_URL": urllib.parse.urlunsplit(moved),
        "FETALMLOPS_MINIO_ACCESS_KEY": str(values["minio_access_key"]),
        "FETALMLOPS_MINIO_SECRET_KEY": str(values["minio_secret_key"]),
    }


def secret_data(stack_config: StackConfig, tokens: Tokens) -> dict[str, dict[str, str]]:
    """Every Secret the chart names (its README's table), by name: its keys and values."""

    def of(service: str | None) -> dict[str, str]:
        return at_node(stack.settings_values(service, stack_config), stack_config)

    def scoped(service: str) -> str:
        return json.dumps({tokens.operator: SCOPES[service]})

    minio = f"{stack_config.node_address}:{stack_config.minio_port}"
    inference = of("inference")
    return {
        "fetalmlops-ingest-credentials": {
            **of("ingest"), "FETALMLOPS_INGEST_TOKENS": scoped("ingest"),
        },
        "fetalmlops-anonymizer-credentials": {
            **of("anonymizer"), "FETALMLOPS_ANONYMIZER_SECRET": tokens.anonymizer_secret,
        },
        "fetalmlops-monitor-credentials": {
            **of("monitor"), "FETALMLOPS_MONITOR_TOKENS": scoped("monitor"),
        },
        "fetalmlops-trainer-credentials": {
            **of("trainer"), "FETALMLOPS_TRAINER_TOKENS": scoped("trainer"),
        },
        "fetalmlops-inference-credentials": {
            "FETALMLOPS_MINIO_ACCESS_KEY": inference["FETALMLOPS_MINIO_ACCESS_KEY"],
            "FETALMLOPS_MINIO_SECRET_KEY": inference["FETALMLOPS_MINIO_SECRET_KEY"],
            "FETALMLOPS_INFERENCE_TOKENS": json.dumps([tokens.operator]),
        },
        "fetalmlops-inference-storage": {
            "AWS_ACCESS_KEY_ID": inference["FETALMLOPS_MINIO_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": inference["FETALMLOPS_MINIO_SECRET_KEY"],
            "S3_ENDPOINT": minio,
            "S3_USE_HTTPS": "0",
        },
        "fetalmlops-migrations-credentials": {
            "FETALMLOPS_DATABASE_URL": of(None)["FETALMLOPS_DATABASE_URL"],
        },
    }  # fmt: skip


def secret_manifests(data: Mapping[str, Mapping[str, str]], namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "fetalmlops"},
                # KServe's storage initializer reads the endpoint from these as well.
                "annotations": {
                    "serving.kserve.io/s3-endpoint": keys["S3_ENDPOINT"],
                    "serving.kserve.io/s3-usehttps": keys["S3_USE_HTTPS"],
                }
                if "S3_ENDPOINT" in keys
                else {},
            },
            "stringData": dict(keys),
        }
        for name, keys in data.items()
    ]


@dataclass(frozen=True)
class Release:
    kubectl: str
    helm: Path
    kubeconfig: Path
    namespace: str = NAMESPACE
    name: str = RELEASE

    def run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        result = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            check=False,
        )
        if result.returncode != 0:
            # kubectl and helm name objects, never the Secret values they were given.
            raise StackError(f"`{' '.join(argv[:3])}` failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def apply_secrets(self, stack_config: StackConfig, tokens: Tokens) -> None:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        manifests = secret_manifests(secret_data(stack_config, tokens), self.namespace)
        self.run([self.kubectl, "apply", "-f", "-"], yaml.safe_dump_all([namespace, *manifests]))

    def install(
        self, values: Sequence[Path] = (), settings: Sequence[str] = (), timeout: str = "10m"
    ) -> None:
        """`helm upgrade --install --wait` of the chart with the local cluster's values."""
        argv = [str(self.helm), "upgrade", "--install", self.name, str(CHART),
                "--namespace", self.namespace, "--wait", "--timeout", timeout,
                "-f", str(LOCAL_VALUES)]  # fmt: skip
        for path in values:
            argv += ["-f", str(path)]
        for setting in settings:
            argv += ["--set", setting]
        self.run(argv)

    def uninstall(self, timeout: str = "5m") -> None:
        self.run([str(self.helm), "uninstall", self.name, "--namespace", self.namespace,
                  "--wait", "--timeout", timeout, "--ignore-not-found"])  # fmt: skip
