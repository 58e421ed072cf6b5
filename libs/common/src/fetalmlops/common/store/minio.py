"""The MinIO backend on the minio SDK (any S3-compatible server works the same way)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import BinaryIO

from minio import Minio
from minio.error import S3Error

from fetalmlops.common.store.base import PART_SIZE, SHA256_METADATA, ObjectInfo, ObjectNotFound

_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


class MinioStore:
    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, secure: bool = False
    ) -> None:
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure)

    def ensure_buckets(self, buckets: Sequence[str]) -> None:
        for bucket in buckets:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)

    def bucket_exists(self, bucket: str) -> bool:
        return bool(self.client.bucket_exists(bucket))

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
        if isinstance(data, bytes):
            length, data = len(data), io.BytesIO(data)
        # Above PART_SIZE the SDK uploads in parts; S3 only shows an object once all parts land.
        self.client.put_object(
            bucket,
            key,
            data,
            length=length,
            part_size=PART_SIZE,
            content_type=content_type,
            metadata={SHA256_METADATA: sha256} if sha256 else None,
        )
        return self.stat(bucket, key)

    def get(self, bucket: str, key: str) -> bytes:
        try:
            response = self.client.get_object(bucket, key)
        except S3Error as exc:
            raise _not_found(exc, bucket, key) from exc
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        try:
            st = self.client.stat_object(bucket, key)
        except S3Error as exc:
            raise _not_found(exc, bucket, key) from exc
        metadata = {k.lower(): v for k, v in (st.metadata or {}).items()}
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=st.size or 0,
            etag=st.etag or "",
            content_type=st.content_type or "application/octet-stream",
            last_modified=st.last_modified,
            sha256=metadata.get(f"x-amz-meta-{SHA256_METADATA}"),
        )

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True):
            if obj.object_name is not None:
                yield self.stat(bucket, obj.object_name)

    def delete(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)

    def presigned_get_url(self, bucket: str, key: str, expires: timedelta) -> str:
        self.stat(bucket, key)
        return self.client.presigned_get_object(bucket, key, expires=expires)


def _not_found(exc: S3Error, bucket: str, key: str) -> Exception:
    return ObjectNotFound(bucket, key) if exc.code in _MISSING else exc
