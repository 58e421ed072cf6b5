"""A model version: what the trainer writes, the registry names and the inference service (or
KServe's stock TorchServe runtime) serves. This module is the one place that says so.

A version is a folder in KServe's TorchServe layout, ``<models bucket>/<model>/v<N>/`` in the
object store (its ``storage_uri``) or ``/mnt/models`` once KServe's storage initializer has
copied it into a predictor pod::

    model-store/<model>.mar      the archive (below)
    config/config.properties     TorchServe's settings, serving this one version
    model-card.md                what it is for, how good, where it fails, its carbon
    metrics.json                 the evaluation, as the registry holds it
    drift_reference.json         the statistics the monitor compares live traffic with

The archive is a TorchServe `.mar` (a zip) whose members are named below. Its handler is code
that runs inside TorchServe too, where this library is not installed, so the handler keeps its
own copy of the names it reads; a test of `fetalmlops.archive` holds the two in step. Every
archive names its format in ``FORMAT_FILE``; a reader refuses a format newer than
``ARCHIVE_FORMAT`` with the reason, rather than failing somewhere inside the handler.
"""

from __future__ import annotations

import json

# The version folder.
MODEL_STORE = "model-store"
CONFIG_PROPERTIES = "config/config.properties"
CARD = "model-card.md"
METRICS = "metrics.json"
DRIFT_REFERENCE = "drift_reference.json"

# The archive's members.
MANIFEST = "MAR-INF/MANIFEST.json"  # torch-model-archiver's own
MODEL_FILE = "model.pt"  # TorchScript: forward, and forward_with_features
HANDLER_CODE = "handler.py"
PREPROCESSING_CODE = "preprocessing.py"
PREPROCESSING_PARAMETERS = "preprocessing.json"
CLASSES_FILE = "index_to_name.json"
BACKGROUND_FILE = "background.npy"  # SHAP's reference images; optional
FORMAT_FILE = "fetalmlops-archive.json"
# What the handler and preprocessing modules offer a server that imports them.
HANDLER_API = ("PlaneClassifier", "image_bytes", "read_classes")
PREPROCESSING_API = ("Preprocessing", "to_tensor", "square_greyscale")

# 1: the members above. An archive written before formats were named is format 1 as well.
ARCHIVE_FORMAT = 1


class ArchiveFormatError(ValueError):
    """An archive of a format this build cannot read."""


def version_prefix(model_name: str, version: int | str) -> str:
    """The version's folder in the models bucket, ending in "/" so v1 never matches v10."""
    return f"{model_name}/v{version}/"


def storage_uri(bucket: str, model_name: str, version: int | str) -> str:
    """What KServe's ``storageUri`` and the registry name a version by."""
    return f"s3://{bucket}/{version_prefix(model_name, version)}"


def mar_path(model_name: str) -> str:
    """The archive's path inside its version folder."""
    return f"{MODEL_STORE}/{model_name}.mar"


def format_document() -> str:
    """The content of ``FORMAT_FILE`` for an archive written now."""
    return json.dumps({"format": ARCHIVE_FORMAT})


def archive_format(document: str | None) -> int:
    """The format ``FORMAT_FILE`` names (``None``: the file is absent, format 1); raises
    ArchiveFormatError for an unreadable file or a format newer than this build reads."""
    if document is None:
        return 1
    try:
        found = json.loads(document)["format"]
    except (ValueError, KeyError, TypeError):
        raise ArchiveFormatError(f"{FORMAT_FILE} does not name a format") from None
    if not isinstance(found, int) or found < 1:
        raise ArchiveFormatError(f"{FORMAT_FILE} does not name a format")
    if found > ARCHIVE_FORMAT:
        raise ArchiveFormatError(
            f"the archive is format {found}, newer than the formats this build reads "
            f"(up to {ARCHIVE_FORMAT}): serve it with a release as new as the trainer that "
            "wrote it"
        )
    return found
