"""What a model version says of itself over V2: its tensors, its version, its preprocessing.

``GET /v2/models/<name>`` (and ``/versions/<version>``) answers the Open Inference Protocol's
model metadata: ``versions`` lists the one version served (the ``model_version`` every answer
carries), and ``parameters`` say what a client must do to send the ``preprocessed`` FP32 input
itself, read from the archive's own ``preprocessing.json``. The steps are those of the
trainer's ``preprocessing.to_tensor``, which every archive carries and this service runs:

1. luminance, ITU-R BT.601 (Pillow's ``convert("L")``): the models are greyscale;
2. padded with black to a centred square, then resized to ``size`` x ``size``, bilinear;
3. scaled to [0, 1] (divided by 255), then normalised: ``(x - mean) / std``;
4. the one plane copied into every channel (``channels``), laid out N, C, H, W.

Parameters are flat strings, numbers and booleans, as the protocol's ``$parameters`` are.
"""

from __future__ import annotations

import json
from typing import Any

from fetalmlops.inference.archive import Archive

IMAGE_INPUT = "image"
TENSOR_INPUT = "preprocessed"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
OUTPUTS = (PROBABILITIES_OUTPUT, LABEL_OUTPUT)
ANY = -1  # a variable dimension in V2 model metadata
PLATFORM = "pytorch_libtorch"  # Triton's name for a TorchScript model


def input_types(archive: Archive) -> list[dict[str, Any]]:
    return [
        {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [ANY]},
        {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [ANY, *archive.input_shape]},
    ]


def output_types(archive: Archive) -> list[dict[str, Any]]:
    return [
        {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [ANY, len(archive.classes)]},
        {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [ANY]},
    ]


def preprocessing_parameters(archive: Archive) -> dict[str, str | int | float]:
    """How an image becomes the ``preprocessed`` input (the module's steps, with numbers)."""
    channels, size, _ = archive.input_shape
    mean, std = float(archive.transform.mean), float(archive.transform.std)
    return {
        "preprocessed_layout": "NCHW",
        "preprocessed_size": size,
        "preprocessed_channels": channels,
        "preprocessed_channel_order": (
            f"one luminance plane (ITU-R BT.601) repeated in each of the {channels} channels"
        ),
        "preprocessed_resize": (
            f"padded with black to a centred square, resized to {size}x{size} (bilinear)"
        ),
        "preprocessed_scaling": "x / 255, to [0, 1]",
        "preprocessed_normalisation": f"(x - {mean}) / {std}",
        "preprocessed_mean": mean,
        "preprocessed_std": std,
    }


def model_metadata(name: str, archive: Archive) -> dict[str, Any]:
    """The V2 model metadata answer for the version ``archive`` serves under ``name``."""
    return {
        "name": name,
        "versions": [archive.model_version],
        "platform": PLATFORM,
        "inputs": input_types(archive),
        "outputs": output_types(archive),
        "parameters": {
            **preprocessing_parameters(archive),
            "image_formats": "PNG, JPEG or DICOM Part 10: base64 text in JSON, raw bytes "
            "in the binary tensor extension",
            "classes": json.dumps(list(archive.classes)),
        },
    }
