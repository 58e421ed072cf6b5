"""Local-stack secrets: generated once per stack home, kept in ``<home>/credentials.json`` (0600).

Generated rather than fixed so no password of a running stack is written in the repository.
They must stay stable: MinIO encrypts its IAM data with the root credentials and PostgreSQL
keeps the superuser password from ``initdb``, so the file lives as long as the data does.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fetalmlops.stack.config import OWNER_ROLE, SERVICES

MINIO_ROOT_USER = "fetalmlops"
POSTGRES_SUPERUSER = "postgres"


def _secret() -> str:
    # URL-safe, so it can sit in a database URL and a shell line without escaping.
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Credentials:
    minio_root_password: str = field(default_factory=_secret)
    postgres_superuser_password: str = field(default_factory=_secret)
    # MinIO access key = service name; value = its secret key.
    minio_secrets: dict[str, str] = field(default_factory=dict)
    # PostgreSQL role (the owner role and one per service) -> password.
    database_passwords: dict[str, str] = field(default_factory=dict)

    def completed(self) -> Credentials:
        """Adds secrets for services that have none yet (a service added after the first up)."""
        minio = {s: self.minio_secrets.get(s) or _secret() for s in SERVICES}
        roles = (OWNER_ROLE, *SERVICES)
        database = {r: self.database_passwords.get(r) or _secret() for r in roles}
        return Credentials(
            self.minio_root_password, self.postgres_superuser_password, minio, database
        )


def _stored(path: Path) -> Credentials | None:
    return Credentials(**json.loads(path.read_text())) if path.exists() else None


def load(path: Path) -> Credentials:
    """The stored credentials, without writing anything (for `status` and `down`)."""
    return (_stored(path) or Credentials()).completed()


def load_or_create(path: Path) -> Credentials:
    stored = _stored(path)
    creds = (stored or Credentials()).completed()
    if creds != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(creds), out, indent=2)
    return creds
