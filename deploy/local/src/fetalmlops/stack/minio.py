"""MinIO built with ``go install``, its buckets and one least-privilege user per service."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from enum import StrEnum
from typing import Any

from minio import Minio
from minio.credentials.providers import StaticProvider
from minio.minioadmin import MinioAdmin

from fetalmlops.common.settings import Buckets, Settings
from fetalmlops.stack.component import Progress
from fetalmlops.stack.config import SERVICES, Port, StackConfig
from fetalmlops.stack.credentials import MINIO_ROOT_USER, Credentials
from fetalmlops.stack.process import HOST, Daemon, require_executable, run_logged, wait_until

# The Go module proxy serves no RELEASE.* tags of MinIO, so the pin is a pseudo-version.
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
GO_HINT = "install Go 1.24+ (https://go.dev/doc/install), or `apt-get install -y golang`."


class Access(StrEnum):
    READ = "read"
    READ_WRITE = "read-write"


# Who may touch which bucket (keys are fields of fetalmlops.common.settings.Buckets).
# `raw` holds PHI (DESIGN.md §2): only ingest writes it and only the anonymizer reads it back.
BUCKET_ACCESS: dict[str, dict[str, Access]] = {
    "ingest": {"raw": Access.READ_WRITE},
    "anonymizer": {"raw": Access.READ_WRITE, "anonymized": Access.READ_WRITE},
    "trainer": {
        "anonymized": Access.READ,
        "datasets": Access.READ_WRITE,
        "models": Access.READ_WRITE,
    },
    "inference": {"models": Access.READ},
    "monitor": {"models": Access.READ, "datasets": Access.READ},
}

BUCKET_READ = ["s3:GetBucketLocation", "s3:ListBucket"]
BUCKET_WRITE = ["s3:ListBucketMultipartUploads"]
OBJECT_READ = ["s3:GetObject"]
OBJECT_WRITE = [
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]


def policy_name(service: str) -> str:
    return f"fetalmlops-{service}"


def service_policy(service: str, buckets: Buckets) -> dict[str, Any]:
    """The IAM policy document of one service: its buckets from BUCKET_ACCESS, nothing else."""
    statements: list[dict[str, Any]] = []
    for key, access in BUCKET_ACCESS[service].items():
        bucket = getattr(buckets, key)
        write = access is Access.READ_WRITE
        statements += [
            {
                "Effect": "Allow",
                "Action": BUCKET_READ + (BUCKET_WRITE if write else []),
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": OBJECT_READ + (OBJECT_WRITE if write else []),
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


class MinioServer:
    name = "minio"

    def __init__(self, config: StackConfig, settings: Settings, credentials: Credentials) -> None:
        self.config = config
        self.settings = settings
        self.credentials = credentials
        self.binary = config.cache / "bin" / f"minio-{MINIO_VERSION}"
        self.log = config.logs / "minio.log"
        self.build_log = config.logs / "minio-build.log"
        self.data_dir = config.data / "minio"
        self.daemon = Daemon(self.name, config.run / "minio.pid", self.log, str(self.data_dir))

    @property
    def ports(self) -> tuple[Port, ...]:
        return (
            self.config.port(self.name, "S3 API", "minio_port"),
            self.config.port(self.name, "console", "minio_console_port"),
        )

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.config.minio_port}"

    def pid(self) -> int | None:
        return self.daemon.pid()

    def install(self, progress: Progress) -> None:
        if self.binary.exists():
            return
        go = require_executable("go", GO_HINT)
        progress(f"building MinIO {MINIO_VERSION} with `go install` (minutes on a first build)")
        gobin = self.binary.parent / f".gobin-{MINIO_VERSION}"
        shutil.rmtree(gobin, ignore_errors=True)
        run_logged(
            [go, "install", f"{MINIO_MODULE}@{MINIO_VERSION}"],
            self.build_log,
            what="building MinIO with `go install`",
            env={"GOBIN": str(gobin)},
        )
        (gobin / "minio").rename(self.binary)
        shutil.rmtree(gobin, ignore_errors=True)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.daemon.spawn(
            [str(self.binary), "server", str(self.data_dir),
             "--address", self.endpoint,
             "--console-address", f"{HOST}:{self.config.minio_console_port}"],
            env={
                "MINIO_ROOT_USER": MINIO_ROOT_USER,
                "MINIO_ROOT_PASSWORD": self.credentials.minio_root_password,
                "MINIO_UPDATE": "off",
            },
        )  # fmt: skip

    def _live(self) -> bool:
        url = f"http://{self.endpoint}/minio/health/live"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self) -> None:
        wait_until(
            self._live,
            name=self.name,
            log=self.log,
            timeout_s=self.config.start_timeout_s,
            alive=lambda: self.pid() is not None,
        )

    def provision(self) -> None:
        root = StaticProvider(MINIO_ROOT_USER, self.credentials.minio_root_password)
        client = Minio(self.endpoint, credentials=root, secure=False)
        for bucket in self.settings.buckets.all():
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        admin = MinioAdmin(endpoint=self.endpoint, credentials=root, secure=False)
        for service in SERVICES:
            name = policy_name(service)
            # Re-adding a policy replaces it, so a changed BUCKET_ACCESS takes effect on `up`.
            admin.policy_add(name, policy=service_policy(service, self.settings.buckets))
            admin.user_add(service, self.credentials.minio_secrets[service])
            attached = json.loads(admin.user_info(service)).get("policyName") or ""
            if name not in attached.split(","):
                admin.attach_policy([name], user=service)

    def stop(self) -> None:
        self.daemon.stop(self.config.stop_timeout_s)
