"""Object storage: MinIO in the stack and the cluster, a local directory when embedded."""

from __future__ import annotations

from fetalmlops.common.settings import Settings, StoreBackend
from fetalmlops.common.store.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    content_key,
    put_content_addressed,
)
from fetalmlops.common.store.local import LocalStore
from fetalmlops.common.store.minio import MinioStore

__all__ = [
    "LocalStore",
    "MinioStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "content_key",
    "open_store",
    "put_content_addressed",
]


def open_store(settings: Settings) -> ObjectStore:
    if settings.store is StoreBackend.MINIO:
        return MinioStore(
            settings.minio_endpoint,
            settings.minio_access_key,
            settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
        )
    return LocalStore(settings.store_dir)
