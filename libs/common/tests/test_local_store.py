from pathlib import Path

import pytest

from fetalmlops.common.store import LocalStore


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../escape", "a/../../escape", ".meta/x"])
def test_keys_that_would_leave_the_bucket_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path)
    store.ensure_buckets(["b"])
    with pytest.raises(ValueError, match="invalid object key"):
        store.put("b", key, b"x")
    assert not (tmp_path / "etc").exists() and not (tmp_path.parent / "escape").exists()


def test_declared_length_must_match(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.ensure_buckets(["b"])
    with pytest.raises(ValueError, match="expected 10 bytes"):
        store.put("b", "k", b"short", length=10)
    assert list(store.list("b")) == []
