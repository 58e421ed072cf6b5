"""A published model version opened for serving: found, downloaded, unpacked, code imported."""

from __future__ import annotations

import base64
import json
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.model_version import ARCHIVE_FORMAT, FORMAT_FILE
from fetalmlops.common.store import LocalStore
from fetalmlops.inference.archive import ArchiveError, open_version, unpack

from .conftest import CLASSES, NAME, SIZE, VERSION


def rezip(mar: Path, target: Path, change: Callable[[dict[str, bytes]], object]) -> Path:
    """A copy of ``mar`` with its members changed by ``change`` (name → content)."""
    with zipfile.ZipFile(mar) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    change(members)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return target


def version_with(
    layout: ModelLayout, root: Path, change: Callable[[dict[str, bytes]], object]
) -> Path:
    rezip(layout.mar, root / "model-store" / layout.mar.name, change)
    return root


def test_a_kserve_layout_directory_opens_with_its_manifest_and_own_code(
    layout: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    path_before = list(sys.path)
    archive = open_version(layout.root, tmp_path / "cache")

    assert (archive.model_name, archive.model_version) == (NAME, str(VERSION))
    assert archive.classes == tuple(CLASSES)
    assert archive.input_shape == (3, SIZE, SIZE)
    # The archive's own files, unpacked under the cache, never the installed fetalmlops.archive.
    assert archive.directory.is_relative_to(tmp_path / "cache")
    for module in (archive.handler, archive.preprocessing):
        assert Path(module.__file__ or "").parent == archive.directory
        assert module.__name__.startswith("fetalmlops_archive_")
    assert "fetalmlops.archive" not in archive.handler.__name__
    assert sys.path == path_before
    encoded = base64.b64encode(pngs[0]).decode()
    assert archive.decode({"b64": encoded}).tensor.shape == (3, SIZE, SIZE)


def test_a_mar_file_opens_by_itself(layout: ModelLayout, tmp_path: Path) -> None:
    assert open_version(layout.mar, tmp_path).model_name == NAME


def test_two_archives_in_one_process_keep_their_own_preprocessing(
    layout: ModelLayout, pngs: list[bytes], tmp_path: Path
) -> None:
    def smaller(members: dict[str, bytes]) -> None:
        parameters = json.loads(members["preprocessing.json"]) | {"size": 32}
        members["preprocessing.json"] = json.dumps(parameters).encode()

    first = open_version(layout.root, tmp_path / "a")
    second = open_version(version_with(layout, tmp_path / "v5", smaller), tmp_path / "b")

    assert first.handler.__name__ != second.handler.__name__
    assert first.preprocessing is not second.preprocessing
    assert first.decode(pngs[0]).tensor.shape == (3, SIZE, SIZE)
    assert second.decode(pngs[0]).tensor.shape == (3, 32, 32)


def test_the_loaded_model_is_the_archived_one(layout: ModelLayout, tmp_path: Path) -> None:
    classifier = open_version(layout.root, tmp_path).load(torch.device("cpu"))
    probabilities = classifier.probabilities(torch.zeros(2, 3, SIZE, SIZE))
    assert probabilities.shape == (2, len(CLASSES))
    assert torch.allclose(probabilities.sum(1), torch.ones(2))


def test_an_s3_prefix_is_downloaded_from_the_object_store(
    layout: ModelLayout, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "objects")
    store.ensure_buckets(["fetal-models"])
    files = {
        p.relative_to(layout.root).as_posix(): p for p in layout.root.rglob("*") if p.is_file()
    }
    for relative, path in files.items():
        store.put("fetal-models", f"{NAME}/v4/{relative}", path.read_bytes())
    # v40 shares v4's prefix as a string; it must not be mixed into v4.
    store.put("fetal-models", f"{NAME}/v40/model-store/other.mar", b"not this one")

    for uri in (f"s3://fetal-models/{NAME}/v4/", f"s3://fetal-models/{NAME}/v4"):
        archive = open_version(uri, tmp_path / "cache", store=lambda: store)
        assert archive.model_name == NAME
        downloaded = archive.mar.parent.parent
        assert {
            p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*") if p.is_file()
        } == set(files)

    with pytest.raises(
        ArchiveError, match="no model version at s3://fetal-models/fetal-planes/v9/"
    ):
        open_version(f"s3://fetal-models/{NAME}/v9/", tmp_path / "cache", store=lambda: store)
    with pytest.raises(ArchiveError, match="names no version"):
        open_version("s3://fetal-models/", tmp_path / "cache", store=lambda: store)
    with pytest.raises(ArchiveError, match="none is configured"):
        open_version(f"s3://fetal-models/{NAME}/v4/", tmp_path / "cache")


def test_a_directory_without_exactly_one_mar_is_refused(
    layout: ModelLayout, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    (empty / "model-store").mkdir(parents=True)
    with pytest.raises(ArchiveError, match=r"no \.mar in .*model-store: not a model version"):
        open_version(empty, tmp_path / "cache")

    two = tmp_path / "two"
    shutil.copytree(layout.root, two)
    shutil.copy(layout.mar, two / "model-store" / "older.mar")
    with pytest.raises(ArchiveError, match=r"holds 2 archives \(fetal-planes\.mar, older\.mar\)"):
        open_version(two, tmp_path / "cache")

    with pytest.raises(ArchiveError, match=r"neither a model version directory nor a \.mar"):
        open_version(tmp_path / "nowhere", tmp_path / "cache")


def test_a_corrupt_archive_is_refused(layout: ModelLayout, tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "model-store" / "fetal-planes.mar"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(layout.mar.read_bytes()[: layout.mar.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"is not a readable \.mar \(zip\) archive"):
        open_version(broken.parent.parent, tmp_path / "cache")


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("index_to_name.json", "lacks index_to_name.json: not built by the trainer"),
        ("model.pt", "lacks model.pt"),
        ("preprocessing.py", "lacks preprocessing.py"),
        ("MAR-INF/MANIFEST.json", "has no MAR-INF/MANIFEST.json"),
    ],
)
def test_an_archive_missing_a_file_is_refused(
    layout: ModelLayout, tmp_path: Path, missing: str, reason: str
) -> None:
    version = version_with(layout, tmp_path / "v", lambda members: members.pop(missing))
    with pytest.raises(ArchiveError, match=reason):
        open_version(version, tmp_path / "cache")


def test_a_handler_without_the_api_this_service_calls_is_refused(
    layout: ModelLayout, tmp_path: Path
) -> None:
    def old_handler(members: dict[str, bytes]) -> None:
        members["handler.py"] = b"from .preprocessing import decode\nclass PlaneClassifier: ...\n"

    version = version_with(layout, tmp_path / "v", old_handler)
    with pytest.raises(ArchiveError, match=r"handler\.py lacks image_bytes, read_classes"):
        open_version(version, tmp_path / "cache")


@pytest.mark.parametrize("member", ["../escape.py", "/tmp/absolute.py", "a/../../escape.py"])
def test_members_that_would_land_outside_the_target_are_refused(
    layout: ModelLayout, tmp_path: Path, member: str
) -> None:
    mar = rezip(layout.mar, tmp_path / "evil.mar", lambda m: m.update({member: b"print(1)"}))
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    with pytest.raises(ArchiveError, match="would be written outside its directory"):
        unpack(mar, target)
    assert not (tmp_path / "deep" / "escape.py").exists()
    assert not (tmp_path / "escape.py").exists()


def test_an_archive_of_a_newer_format_is_refused_with_the_reason(
    layout: ModelLayout, tmp_path: Path
) -> None:
    def newer(members: dict[str, bytes]) -> None:
        members[FORMAT_FILE] = json.dumps({"format": ARCHIVE_FORMAT + 1}).encode()

    def written_before_formats(members: dict[str, bytes]) -> None:
        del members[FORMAT_FILE]

    with pytest.raises(ArchiveError, match=f"format {ARCHIVE_FORMAT + 1}, newer than"):
        open_version(version_with(layout, tmp_path / "next", newer), tmp_path / "a")
    older = open_version(version_with(layout, tmp_path / "old", written_before_formats), tmp_path)
    assert older.model_name == NAME
