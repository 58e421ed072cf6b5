"""Object store in a local directory, for the one-process quick start and fast tests.

Layout: ``<root>/<bucket>/<key>``, with metadata in ``<root>/.meta/<bucket>/<key>.json``. Writes go
to a temporary file that is renamed into place, so a reader never sees half an object.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fetalmlops.common.store.base import ObjectInfo, ObjectNotFound

_META = ".meta"
_TMP = ".tmp-"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_buckets(self, buckets: Sequence[str]) -> None:
        for bucket in buckets:
            self._bucket(bucket).mkdir(parents=True, exist_ok=True)

    def bucket_exists(self, bucket: str) -> bool:
        return self._bucket(bucket).is_dir()

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
        path = self._path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        md5 = hashlib.md5(usedforsecurity=False)  # S3's single-part ETag is the MD5
        size = 0
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=_TMP, delete=False) as tmp:
            partial = Path(tmp.name)
            try:
                while chunk := stream.read(1024 * 1024):
                    md5.update(chunk)
                    tmp.write(chunk)
                    size += len(chunk)
                if length >= 0 and size != length:
                    raise ValueError(f"expected {length} bytes for {key!r}, got {size}")
            except BaseException:
                partial.unlink()
                raise
        meta = {"content_type": content_type, "sha256": sha256, "etag": md5.hexdigest()}
        self._write_meta(bucket, key, meta)
        partial.replace(path)
        return self.stat(bucket, key)

    def get(self, bucket: str, key: str) -> bytes:
        try:
            return self._path(bucket, key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(bucket, key) from None

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        path = self._path(bucket, key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ObjectNotFound(bucket, key) from None
        meta = self._read_meta(bucket, key)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=st.st_size,
            etag=str(meta.get("etag", "")),
            content_type=str(meta.get("content_type", "application/octet-stream")),
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            sha256=meta.get("sha256"),
        )

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._bucket(bucket)
        keys = sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(_TMP)
        )
        for key in keys:
            if key.startswith(prefix):
                yield self.stat(bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        self._path(bucket, key).unlink(missing_ok=True)
        self._meta_path(bucket, key).unlink(missing_ok=True)

    def presigned_get_url(self, bucket: str, key: str, expires: timedelta) -> str:
        # A directory has no access control to sign for: the file URI is the honest equivalent.
        self.stat(bucket, key)
        return self._path(bucket, key).resolve().as_uri()

    def _bucket(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise ValueError(f"invalid bucket name {bucket!r}")
        return self.root / bucket

    def _path(self, bucket: str, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not key or key.startswith("/") or ".." in parts or any(p.startswith(".") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self._bucket(bucket).joinpath(*parts)

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self.root / _META / bucket / f"{key}.json"

    def _write_meta(self, bucket: str, key: str, meta: dict[str, str | None]) -> None:
        path = self._meta_path(bucket, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(meta))

    def _read_meta(self, bucket: str, key: str) -> dict[str, str | None]:
        try:
            return dict(json.loads(self._meta_path(bucket, key).read_text()))
        except FileNotFoundError:
            return {}
