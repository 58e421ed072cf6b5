"""One contract, two backends: the real MinIO server of the local stack and the directory store."""

from __future__ import annotations

import io
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from fetalmlops.common.settings import Settings
from fetalmlops.common.store import (
    LocalStore,
    MinioStore,
    ObjectNotFound,
    ObjectStore,
    content_key,
    put_content_addressed,
)

MiB = 1024 * 1024


@pytest.fixture(params=["local", pytest.param("minio", marks=pytest.mark.stack)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "minio":
        stack_settings: Callable[[str | None], Settings] = request.getfixturevalue("stack_settings")
        root = stack_settings(None)
        backend: ObjectStore = MinioStore(
            root.minio_endpoint, root.minio_access_key, root.minio_secret_key.get_secret_value()
        )
    else:
        backend = LocalStore(tmp_path / "objects")
    yield backend


@pytest.fixture
def bucket(store: ObjectStore) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    store.ensure_buckets([name])
    yield name
    for info in store.list(name):
        store.delete(name, info.key)
    if isinstance(store, MinioStore):
        store.client.remove_bucket(name)


def test_put_get_stat_list_delete_round_trip(store: ObjectStore, bucket: str) -> None:
    info = store.put(bucket, "a/one.dcm", b"DICM-bytes", content_type="application/dicom")
    store.put(bucket, "a/two.png", io.BytesIO(b"png"), length=3, content_type="image/png")
    store.put(bucket, "b/three", b"3")

    assert info.size == 10 and info.content_type == "application/dicom"
    assert store.get(bucket, "a/one.dcm") == b"DICM-bytes"
    assert store.stat(bucket, "a/two.png").content_type == "image/png"
    assert [o.key for o in store.list(bucket, "a/")] == ["a/one.dcm", "a/two.png"]
    assert [o.key for o in store.list(bucket)] == ["a/one.dcm", "a/two.png", "b/three"]

    store.delete(bucket, "a/one.dcm")
    store.delete(bucket, "a/one.dcm")  # idempotent
    with pytest.raises(ObjectNotFound):
        store.get(bucket, "a/one.dcm")
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "a/one.dcm")


def test_bucket_existence_is_reported(store: ObjectStore, bucket: str) -> None:
    assert store.bucket_exists(bucket)
    assert not store.bucket_exists(f"absent-{uuid.uuid4().hex[:8]}")


def test_content_addressed_put_stores_once_and_recognises_duplicates(
    store: ObjectStore, bucket: str
) -> None:
    first, created = put_content_addressed(store, bucket, b"pixels", prefix="sha256/")
    again, created_again = put_content_addressed(store, bucket, b"pixels", prefix="sha256/")

    key, digest = content_key(b"pixels", "sha256/")
    assert (created, created_again) == (True, False)
    assert first.key == again.key == key == f"sha256/{digest}"
    assert first.sha256 == again.sha256 == digest
    assert [o.key for o in store.list(bucket)] == [key]


def test_large_object_round_trip_uses_multipart(store: ObjectStore, bucket: str) -> None:
    payload = os.urandom(20 * MiB)
    info = store.put(bucket, "large.bin", io.BytesIO(payload))  # unknown length: streamed

    assert info.size == len(payload)
    assert store.get(bucket, "large.bin") == payload
    if isinstance(store, MinioStore):
        # S3 ETags of multipart uploads end in "-<number of parts>".
        assert info.etag.rsplit("-", 1)[-1] == "4"


def test_presigned_url_serves_the_object(store: ObjectStore, bucket: str) -> None:
    store.put(bucket, "report.html", b"<html>ok</html>", content_type="text/html")
    url = store.presigned_get_url(bucket, "report.html", timedelta(minutes=5))
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"<html>ok</html>"
    with pytest.raises(ObjectNotFound):
        store.presigned_get_url(bucket, "missing.html", timedelta(minutes=5))


def test_failed_stream_leaves_nothing_half_stored(store: ObjectStore, bucket: str) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            if self.sent >= 6 * MiB:
                raise ConnectionResetError("client went away")
            n = min(len(buffer), MiB)
            buffer[:n] = b"x" * n
            self.sent += n
            return n

    with pytest.raises(ConnectionResetError):
        store.put(bucket, "partial.bin", io.BufferedReader(Broken()))
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "partial.bin")
    assert list(store.list(bucket)) == []
    if isinstance(store, LocalStore):
        assert not any(store.root.rglob(".tmp-*")), "no temporary file left behind"
