"""What every object-store backend offers (MinIO in the stack, a directory when embedded)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO, Protocol

# MinIO switches to a multipart upload above one part; 5 MiB is S3's smallest allowed part.
PART_SIZE = 5 * 1024 * 1024
SHA256_METADATA = "sha256"


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    last_modified: datetime | None = None
    sha256: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ObjectNotFound(LookupError):
    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"no object {key!r} in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key


class ObjectStore(Protocol):
    def ensure_buckets(self, buckets: Sequence[str]) -> None: ...

    def bucket_exists(self, bucket: str) -> bool: ...

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes | BinaryIO,
        *,
        length: int = -1,
        content_type: str = "application/octet-stream",
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Store an object whole or not at all. A stream of unknown length (-1) is fine."""

    def get(self, bucket: str, key: str) -> bytes: ...

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Raise ``ObjectNotFound`` when there is no such object."""

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, recursively, in key order."""

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; removing a missing one is not an error (idempotent replays)."""

    def presigned_get_url(self, bucket: str, key: str, expires: timedelta) -> str: ...


def content_key(data: bytes, prefix: str = "") -> tuple[str, str]:
    """The key a content-addressed object gets, and its sha256: ``<prefix><sha256>``."""
    digest = hashlib.sha256(data).hexdigest()
    return f"{prefix}{digest}", digest


def put_content_addressed(
    store: ObjectStore,
    bucket: str,
    data: bytes,
    *,
    prefix: str = "",
    content_type: str = "application/octet-stream",
) -> tuple[ObjectInfo, bool]:
    """Store ``data`` under its sha256 unless it is already there; ``(info, created)``.

    The key is a function of the bytes alone, so a replayed upload lands on the same object
    and a duplicate is recognised without a lookup table.
    """
    key, digest = content_key(data, prefix)
    try:
        return store.stat(bucket, key), False
    except ObjectNotFound:
        return store.put(bucket, key, data, content_type=content_type, sha256=digest), True
