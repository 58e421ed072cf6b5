"""A model version as the trainer published it, opened for serving: the `.mar`, unpacked.

A version arrives in KServe's TorchServe layout (`fetalmlops.common.model_version`), mounted
by KServe's storage initializer at ``/mnt/models`` or read straight from the object store
(``s3://<models bucket>/<model>/v<N>/``)::

    <version>/model-store/<model_name>.mar
    <version>/config/config.properties

The `.mar` is a zip holding the TorchScript model, the handler and preprocessing *code*, their
parameters and the class names. This service never imports the trainer: it unpacks the archive
and imports the archive's own ``handler.py`` (which imports its ``preprocessing.py``), so a
prediction here runs exactly the transform TorchServe would run on the same file. That also
means the archive is code: whoever may write the models bucket may run code in this service,
as in TorchServe.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Protocol, TypeGuard

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from fetalmlops.common.model_version import (
    CLASSES_FILE,
    FORMAT_FILE,
    HANDLER_API,
    MANIFEST,
    MODEL_FILE,
    MODEL_STORE,
    PREPROCESSING_API,
    PREPROCESSING_CODE,
    PREPROCESSING_PARAMETERS,
    ArchiveFormatError,
    archive_format,
)
from fetalmlops.common.store import ObjectStore
from fetalmlops.imaging.statistics import STATISTICS_SIZE
from fetalmlops.inference.dicom import Scanner, cleaned_request, is_dicom
from fetalmlops.inference.limits import ImageLimits, check_size
from fetalmlops.inference.refusals import TooLarge

# Far above any backbone the trainer offers; refuses a zip bomb before a byte is written.
MAX_UNPACKED_BYTES = 4 * 1024**3
# What a request may send (as ingest accepts): Pillow would open a dozen more formats.
PICTURE_FORMATS = ("PNG", "JPEG")
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


class ArchiveError(Exception):
    """A model version that cannot be served, and why."""


class Classifier(Protocol):
    """The archive's ``handler.PlaneClassifier``, as far as this service uses it."""

    classes: list[str]
    model: Any  # the TorchScript module
    device: torch.device
    has_features: bool  # the model has ``forward_with_features`` (embeddings, Grad-CAM)
    background: torch.Tensor | None  # preprocessed training images, SHAP's reference

    def probabilities(self, images: torch.Tensor) -> torch.Tensor: ...

    def scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def prediction(self, probabilities: torch.Tensor) -> dict[str, Any]: ...

    def answer(self, batch: Sequence[object]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Archive:
    """An unpacked `.mar` with its code imported; the model itself is loaded by ``load``."""

    model_name: str
    model_version: str
    mar: Path
    directory: Path
    classes: tuple[str, ...]
    handler: ModuleType
    preprocessing: ModuleType
    transform: Any  # the archive's own Preprocessing, read from its preprocessing.json

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        return (int(self.transform.channels), int(self.transform.size), int(self.transform.size))

    def load(self, device: torch.device) -> Classifier:
        classifier: Classifier = self.handler.PlaneClassifier.load(self.directory, device)
        return classifier

    def decoding_digest(self) -> str:
        """What turns a request into this version's input: the archive's handler and
        preprocessing code and its preprocessing parameters. Two versions with the same digest
        decode a request to the same tensors, so a champion and its challenger share one
        decoding (the usual case: a retrain with the same recipe)."""
        digest = hashlib.sha256()
        for path in (
            Path(self.handler.__file__ or ""),
            Path(self.preprocessing.__file__ or ""),
            self.directory / PREPROCESSING_PARAMETERS,
        ):
            digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()

    def decode(self, item: object, limits: ImageLimits | None = None) -> Decoded:
        """One request item (base64 text, image bytes, ``{"b64": ...}``) as the model's input.

        A DICOM file is first cleaned and harmonised into the canonical PNG the anonymizer
        would publish for it (`dicom.cleaned_request`), the picture the model learnt from.
        The picture is decoded once, by the archive's own code, into the model's input and
        into the thumbnail image statistics are measured on. Raises TooLarge when the header
        declares more than ``limits`` allow (before a pixel is decoded), and ValueError with a
        reason that quotes nothing of the item when it is not a PNG, JPEG or DICOM.
        """
        limits = limits or ImageLimits()
        # Raw bytes that are a file already are not text to decode, even when every byte
        # of them happens to be ASCII (a small DICOM can be).
        data: bytes = item if is_file(item) else self.handler.image_bytes(item)
        scanner = None
        if is_dicom(data):
            cleaned = cleaned_request(data, limits=limits)
            data, scanner = cleaned.png, cleaned.scanner
        picture = open_picture(data, limits)
        with picture:
            tensor = self.preprocessing.to_tensor(picture, self.transform)
            thumbnail = self.preprocessing.square_greyscale(picture, STATISTICS_SIZE)
            columns, rows = picture.size
        return Decoded(tensor, np.asarray(thumbnail), rows, columns, scanner)

    def decode_tensor(self, tensor: torch.Tensor) -> Decoded:
        """An image sent already preprocessed, with the thumbnail of its grey levels."""
        levels = tensor[0].numpy() * float(self.transform.std) + float(self.transform.mean)
        grey = Image.fromarray(np.rint(np.clip(levels, 0, 1) * 255).astype(np.uint8))
        thumbnail = self.preprocessing.square_greyscale(grey, STATISTICS_SIZE)
        return Decoded(tensor, np.asarray(thumbnail), tensor.shape[1], tensor.shape[2])


def open_picture(data: bytes, limits: ImageLimits) -> Image.Image:
    """The PNG or JPEG in ``data``, decoded once its header's size is within ``limits``, in
    luminance (mode ``L``)."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns past 89 M pixels; ours has refused it by then.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture: Image.Image = Image.open(io.BytesIO(data), formats=PICTURE_FORMATS)
            columns, rows = picture.size
            check_size(rows, columns, 1, limits)  # from the header, before decoding
            picture.load()
            if picture.mode != "L":
                # Every archive's preprocessing starts from luminance (Pillow's BT.601): the
                # decoded colour picture, four times the size, need not outlive this.
                with picture:
                    picture = picture.convert("L")
    except TooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge("the image would decompress past the pixel limit") from None
    except Exception as exc:
        # Pillow raises many types for truncated or corrupt input, and its messages may
        # quote what it read.
        kind = type(exc).__name__
        raise ValueError(f"not a PNG or JPEG image, or a corrupt one ({kind})") from None
    return picture


def is_file(item: object) -> TypeGuard[bytes]:
    """Bytes that begin as a PNG, a JPEG or a DICOM Part 10 file does."""
    return isinstance(item, bytes) and (item.startswith(SIGNATURES) or is_dicom(item))


@dataclass(frozen=True)
class Decoded:
    """One image of a request: the model's input, and what its prediction event reports."""

    tensor: torch.Tensor  # (channels, size, size), preprocessed by the archive's code
    thumbnail: NDArray[np.uint8]  # the square greyscale thumbnail statistics are measured on
    rows: int  # of the picture received
    columns: int
    scanner: Scanner | None = None


def open_version(
    source: str | Path, cache: Path, store: Callable[[], ObjectStore] | None = None
) -> Archive:
    """The version at ``source`` (a KServe-layout directory, a `.mar`, or an ``s3://`` prefix).

    ``store`` opens the object store an ``s3://`` source is read from; downloads and the
    unpacked archive go under ``cache``.
    """
    cache.mkdir(parents=True, exist_ok=True)
    if str(source).startswith("s3://"):
        if store is None:
            raise ArchiveError(f"{source} is in an object store, and none is configured")
        directory = download(str(source), store(), Path(tempfile.mkdtemp(dir=cache)))
    else:
        directory = Path(source)
    mar = locate_mar(directory)
    unpacked = unpack(mar, Path(tempfile.mkdtemp(prefix="unpacked-", dir=cache)))
    return read_archive(mar, unpacked)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix ending in "/"), so ``v1`` never matches ``v10``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket or not prefix.strip("/"):
        raise ArchiveError(f"{uri} names no version: expected s3://<bucket>/<model>/v<N>/")
    return bucket, prefix.rstrip("/") + "/"


def download(uri: str, store: ObjectStore, target: Path) -> Path:
    """Every object under the version's prefix, as KServe's storage initializer would copy it."""
    bucket, prefix = split_uri(uri)
    count = 0
    try:
        for info in store.list(bucket, prefix):
            relative = safe_relative(info.key.removeprefix(prefix), f"object {info.uri}")
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.get(bucket, info.key))
            count += 1
    except ArchiveError:
        raise
    except Exception as exc:  # the store's own errors (S3Error, connection, missing bucket)
        raise ArchiveError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
    if count == 0:
        raise ArchiveError(f"no model version at {uri}: the prefix holds no object")
    return target


def locate_mar(source: Path) -> Path:
    """The one `.mar` of a version directory (or ``source`` itself when it is a `.mar`)."""
    if source.is_file() and source.suffix == ".mar":
        return source
    if not source.is_dir():
        raise ArchiveError(f"{source} is neither a model version directory nor a .mar file")
    store = source / MODEL_STORE
    found = sorted(store.glob("*.mar")) if store.is_dir() else []
    if not found:
        raise ArchiveError(f"no .mar in {store}: not a model version in KServe's layout")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ArchiveError(f"{store} holds {len(found)} archives ({names}); a version holds one")
    return found[0]


def safe_relative(name: str, what: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside the directory it is written to."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or ":" in name:
        raise ArchiveError(f"{what} would be written outside its directory: {name!r}")
    return path


def unpack(mar: Path, target: Path) -> Path:
    """Extracts ``mar`` into ``target``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(mar) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            size = sum(info.file_size for info in members)
            if size > MAX_UNPACKED_BYTES:
                raise ArchiveError(f"{mar.name} would unpack to {size} bytes, over the limit")
            for info in members:
                relative = safe_relative(info.filename, f"member of {mar.name}")
                path = target.joinpath(*relative.parts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, path.open("xb") as destination:
                    shutil.copyfileobj(source, destination)
    except FileExistsError as exc:
        raise ArchiveError(f"{mar.name} holds {exc.filename} twice") from None
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError and NotImplementedError: an encrypted member, an unknown compression.
        raise ArchiveError(f"{mar} is not a readable .mar (zip) archive: {exc}") from None
    return target


def read_archive(mar: Path, directory: Path) -> Archive:
    manifest = read_manifest(directory)
    model = manifest.get("model", {})
    name, handler_file = model.get("modelName"), model.get("handler")
    if not isinstance(name, str) or not isinstance(handler_file, str):
        raise ArchiveError(f"{mar.name}: {MANIFEST} names no model or no handler")
    format_path = directory / FORMAT_FILE
    try:
        archive_format(format_path.read_text() if format_path.is_file() else None)
    except (ArchiveFormatError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{mar.name}: {exc}") from None
    required = [
        handler_file,
        model.get("serializedFile", MODEL_FILE),
        PREPROCESSING_CODE,
        PREPROCESSING_PARAMETERS,
        CLASSES_FILE,
    ]
    missing = [file for file in required if not (directory / file).is_file()]
    if missing:
        raise ArchiveError(f"{mar.name} lacks {', '.join(missing)}: not built by the trainer")
    handler, preprocessing = import_archive_code(directory, handler_file)
    try:
        classes = handler.read_classes((directory / CLASSES_FILE).read_text())
        transform = preprocessing.Preprocessing.from_json(
            (directory / PREPROCESSING_PARAMETERS).read_text()
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{mar.name}: unreadable classes or preprocessing: {exc}") from None
    return Archive(
        model_name=name,
        model_version=str(model.get("modelVersion", "1")),
        mar=mar,
        directory=directory,
        classes=tuple(classes),
        handler=handler,
        preprocessing=preprocessing,
        transform=transform,
    )


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise ArchiveError(f"the archive has no {MANIFEST}: not a TorchServe model archive")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("model"), dict):
        raise ArchiveError(f"{MANIFEST} has no model entry")
    return manifest


def import_archive_code(directory: Path, handler_file: str) -> tuple[ModuleType, ModuleType]:
    """The archive's handler and preprocessing modules, in a package of their own.

    The handler imports ``.preprocessing`` relatively when it lives in a package, so each
    unpacked archive becomes a package named after its directory: two versions loaded in one
    process keep their own preprocessing, and nothing touches ``sys.path``.
    """
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    package = f"fetalmlops_archive_{digest}"
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    sys.modules[package] = importlib.util.module_from_spec(spec)
    handler_spec = importlib.util.spec_from_file_location(
        f"{package}.{Path(handler_file).stem}", directory / handler_file
    )
    if handler_spec is None or handler_spec.loader is None:
        raise ArchiveError(f"cannot import {handler_file} from the archive")
    handler = importlib.util.module_from_spec(handler_spec)
    sys.modules[handler_spec.name] = handler
    try:
        handler_spec.loader.exec_module(handler)
    except Exception as exc:
        raise ArchiveError(f"the archive's {handler_file} fails to import: {exc!r}") from exc
    preprocessing = sys.modules.get(f"{package}.preprocessing")
    if preprocessing is None:
        raise ArchiveError(f"the archive's {handler_file} does not use its {PREPROCESSING_CODE}")
    for module, names in ((handler, HANDLER_API), (preprocessing, PREPROCESSING_API)):
        absent = [name for name in names if not hasattr(module, name)]
        if absent:
            raise ArchiveError(
                f"the archive's {Path(module.__file__ or '?').name} lacks {', '.join(absent)}: "
                "built by a trainer this service does not know"
            )
    return handler, preprocessing
