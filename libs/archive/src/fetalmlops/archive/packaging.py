"""A trained model as a servable version: TorchScript, a self-describing `.mar`, KServe's layout.

KServe's TorchServe runtime mounts a version's storageUri at ``/mnt/models`` and runs
``torchserve --start --model-store=/mnt/models/model-store
--ts-config=/mnt/models/config/config.properties``, so a version is::

    <root>/model-store/<model_name>.mar
    <root>/config/config.properties

The archive carries the TorchScript (``model.pt``), the handler, the preprocessing code *and*
its parameters (``preprocessing.json``) and the class names (``index_to_name.json``): our own
KServe ModelServer unpacks the same file and needs nothing else to answer exactly as TorchServe.
The TorchScript has a second method, ``forward_with_features`` (see `servable.Servable`), and
the archive may carry SHAP's background images (``background.npy``): what the inference
service needs to measure drift on live traffic and to explain a prediction.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fetalmlops.archive.preprocessing import Preprocessing
from fetalmlops.archive.servable import FEATURES_METHOD, Servable
from fetalmlops.common.model_version import (
    BACKGROUND_FILE,
    CLASSES_FILE,
    CONFIG_PROPERTIES,
    FORMAT_FILE,
    HANDLER_CODE,
    MANIFEST,
    MODEL_FILE,
    PREPROCESSING_CODE,
    PREPROCESSING_PARAMETERS,
    format_document,
    mar_path,
)

HERE = Path(__file__).parent
HANDLER_SOURCE = HERE / HANDLER_CODE
PREPROCESSING_SOURCE = HERE / PREPROCESSING_CODE
RESERVED_FILES = frozenset(
    {
        MODEL_FILE, HANDLER_CODE, PREPROCESSING_CODE, PREPROCESSING_PARAMETERS, CLASSES_FILE,
        BACKGROUND_FILE, FORMAT_FILE, MANIFEST.split("/")[0],
    }
)  # fmt: skip
# torch-model-archiver's own rule (ModelExportUtils.check_model_name_regex_or_exit), checked
# here because the archiver answers a bad name with sys.exit and no message worth reading.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
EXTRA_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")
NO_EXTRA_FILES: Mapping[str, bytes] = MappingProxyType({})

# Where KServe's storage initializer puts the storageUri inside the predictor pod.
KSERVE_MODEL_STORE = "/mnt/models/model-store"


class ExportMismatch(RuntimeError):
    """The exported TorchScript does not reproduce the eager model."""


@dataclass(frozen=True)
class ModelLayout:
    root: Path
    mar: Path
    config_properties: Path


@dataclass(frozen=True)
class WorkerSettings:
    """One model's entry of TorchServe's ``model_snapshot``.

    ``batch_size`` stays 1 by default: TorchServe's KServe envelopes (which KServe switches on
    with ``TS_SERVICE_ENVELOPE``) read only the first request of a batch.
    """

    min_workers: int = 1
    max_workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 10
    response_timeout_s: int = 120


def export_torchscript(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    head: str,
    features: str,
    atol: float = 1e-5,
) -> Path:
    """Traces a CPU, eval-mode copy of ``model`` and saves it; raises ExportMismatch.

    The TorchScript has ``forward(x) -> logits`` and ``forward_with_features(x) -> (logits,
    embedding, feature_map)``, ``head`` and ``features`` being dotted paths in ``model`` (see
    `servable.Servable`). The saved file is loaded back and both methods are compared with the
    eager model on ``example`` and on a batch one larger, so a batch size baked in by tracing
    is caught before serving batches.
    """
    eager = Servable(copy.deepcopy(model).cpu().eval(), head, features).eval()
    # Grad-CAM differentiates the loaded file: a linear probe's frozen encoder would leave the
    # feature map without a gradient. Tracing with gradients on also keeps
    # nn.MultiheadAttention off its fused inference kernel, which has no derivative.
    eager.requires_grad_(True)
    example = example.detach().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is what TorchServe 0.12's
        # workers and our inference service load.
        warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
        # No check_trace: the comparison below, after reloading and on two batch sizes, is the
        # stronger check, and tracing's own would trace everything a second time.
        traced = torch.jit.trace_module(  # type: ignore[no-untyped-call]
            eager, {"forward": example, FEATURES_METHOD: example}, check_trace=False
        )
        torch.jit.save(traced, str(path))
        exported = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        with torch.no_grad():
            for inputs in (example, torch.cat([example, example[:1].flip(-1)])):
                problem = export_mismatch(eager, exported, inputs, atol)
                if problem:
                    raise ExportMismatch(
                        f"TorchScript export of {type(model).__name__} differs from the eager "
                        f"model on a batch of {len(inputs)}: {problem}"
                    )
    return path


def export_mismatch(
    eager: Servable, exported: torch.jit.ScriptModule, inputs: torch.Tensor, atol: float
) -> str | None:
    """What of the exported methods' outputs differs from the eager model's, if anything."""
    expected = (eager(inputs), *eager.forward_with_features(inputs))
    actual = (exported(inputs), *getattr(exported, FEATURES_METHOD)(inputs))
    names = ("logits", f"{FEATURES_METHOD} logits", "embedding", "feature map")
    for name, wanted, got in zip(names, expected, actual, strict=True):
        problem = mismatch(wanted, got, atol)
        if problem:
            return f"{name}: {problem}"
    return None


def mismatch(expected: torch.Tensor, actual: torch.Tensor, atol: float) -> str | None:
    if expected.shape != actual.shape:
        return f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}"
    if not torch.allclose(expected, actual, atol=atol, rtol=1e-4):
        return f"max |difference| {(expected - actual).abs().max().item():.3g} > {atol:g}"
    return None


def index_to_name(classes: Sequence[str]) -> str:
    return json.dumps({str(i): name for i, name in enumerate(classes)}, indent=2)


def config_properties(model_name: str, version: int, workers: WorkerSettings) -> str:
    """The config.properties KServe's TorchServe runtime reads, serving this one version.

    Addresses and layout follow KServe's TorchServe example (kserve/website
    ``docs/modelserving/v1beta1/torchserve``); ``enable_envvars_config`` is what lets KServe
    choose the v1 or v2 envelope through ``TS_SERVICE_ENVELOPE``.
    """
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            model_name: {
                str(version): {
                    "defaultVersion": True,
                    "marName": f"{model_name}.mar",
                    "minWorkers": workers.min_workers,
                    "maxWorkers": workers.max_workers,
                    "batchSize": workers.batch_size,
                    "maxBatchDelay": workers.max_batch_delay_ms,
                    "responseTimeout": workers.response_timeout_s,
                }
            }
        },
    }
    properties = {
        "inference_address": "http://0.0.0.0:8085",
        "management_address": "http://0.0.0.0:8085",
        "metrics_address": "http://0.0.0.0:8082",
        "grpc_inference_port": "7070",
        "grpc_management_port": "7071",
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
        "number_of_netty_threads": "4",
        "job_queue_size": "10",
        "enable_envvars_config": "true",
        "install_py_dep_per_model": "true",
        # TorchServe 0.12 demands a bearer token by default; inside the pod only KServe's
        # queue proxy reaches it, and KServe sends none.
        "disable_token_authorization": "true",
        "model_store": KSERVE_MODEL_STORE,
        "model_snapshot": json.dumps(snapshot, separators=(",", ":")),
    }
    header = f"# TorchServe configuration of {model_name} version {version} for KServe\n"
    return header + "".join(f"{key}={value}\n" for key, value in properties.items())


def check_archive_inputs(
    model_name: str, version: int, classes: Sequence[str], extra_files: Mapping[str, bytes]
) -> None:
    if not MODEL_NAME.match(model_name):
        raise ValueError(f"model name {model_name!r} must match {MODEL_NAME.pattern}")
    if version < 1:
        raise ValueError(f"model version must be a positive integer, not {version}")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct and non-empty: {list(classes)}")
    for name in extra_files:
        if not EXTRA_FILE_NAME.match(name) or name in RESERVED_FILES:
            raise ValueError(f"extra file name {name!r} is not a free plain file name")


def build_mar(
    model_name: str,
    version: int,
    torchscript: Path,
    preprocessing: Preprocessing,
    classes: Sequence[str],
    root: Path,
    extra_files: Mapping[str, bytes] = NO_EXTRA_FILES,
    *,
    background: NDArray[np.float32] | None = None,
    workers: WorkerSettings = WorkerSettings(),
) -> ModelLayout:
    """Writes the archive and TorchServe's settings into the version folder ``root``
    (`fetalmlops.common.model_version`: ``model-store/<model_name>.mar``,
    ``config/config.properties``).

    ``background``, SHAP's background images (B, channels, size, size) preprocessed as served,
    goes into the archive as ``background.npy``; an archive without one explains nothing.
    """
    check_archive_inputs(model_name, version, classes, extra_files)
    if background is not None:
        check_background(background, preprocessing)
    mar, config = root / mar_path(model_name), root / CONFIG_PROPERTIES
    mar.parent.mkdir(parents=True, exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mar-") as scratch:
        staging = Path(scratch) / "files"
        staging.mkdir()
        shutil.copyfile(torchscript, staging / MODEL_FILE)
        shutil.copyfile(HANDLER_SOURCE, staging / HANDLER_CODE)
        extras = {
            PREPROCESSING_CODE: PREPROCESSING_SOURCE.read_bytes(),
            PREPROCESSING_PARAMETERS: preprocessing.to_json().encode(),
            CLASSES_FILE: index_to_name(classes).encode(),
            FORMAT_FILE: format_document().encode(),
            **({} if background is None else {BACKGROUND_FILE: npy_bytes(background)}),
            **extra_files,
        }
        for name, content in extras.items():
            (staging / name).write_bytes(content)
        archiver_tmp = Path(scratch) / "archiver"
        archiver_tmp.mkdir()
        archive(model_name, version, staging, sorted(extras), mar.parent, archiver_tmp)
    config.write_text(config_properties(model_name, version, workers))
    return ModelLayout(root=root, mar=mar, config_properties=config)


def check_background(background: NDArray[np.float32], preprocessing: Preprocessing) -> None:
    side = preprocessing.size
    expected = (preprocessing.channels, side, side)
    if background.ndim != 4 or len(background) < 1 or background.shape[1:] != expected:
        raise ValueError(
            f"background must be (B >= 1, {', '.join(map(str, expected))}) images preprocessed "
            f"as served, got shape {background.shape}"
        )
    if background.dtype != np.float32:
        raise ValueError(f"background must be float32, the model's input, not {background.dtype}")
    if not np.isfinite(background).all():
        raise ValueError("background holds NaN or infinity")


def npy_bytes(array: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def archive(
    model_name: str,
    version: int,
    staging: Path,
    extra_files: Sequence[str],
    export_path: Path,
    scratch: Path,
) -> None:
    """Runs torch-model-archiver in a child process.

    The archiver stages files in ``$TMPDIR/<model_name>`` (shared by concurrent builds of the
    same name) and reconfigures the root logger, so it gets its own process and TMPDIR.
    """
    command = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", model_name,
        "--version", str(version),
        "--serialized-file", str(staging / MODEL_FILE),
        "--handler", str(staging / HANDLER_CODE),
        "--extra-files", ",".join(str(staging / name) for name in extra_files),
        "--export-path", str(export_path),
        "--force",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        env={**os.environ, "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"torch-model-archiver failed (exit code {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )


def read_mar(mar: Path) -> dict[str, bytes]:
    """Every file of the archive by its path inside it, ``MAR-INF/MANIFEST.json`` included."""
    with zipfile.ZipFile(mar) as archive_file:
        return {
            info.filename: archive_file.read(info)
            for info in archive_file.infolist()
            if not info.is_dir()
        }
