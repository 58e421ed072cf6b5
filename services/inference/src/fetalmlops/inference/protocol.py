"""KServe's V1 and V2 protocols to and from the model's tensors: what a client may send.

V1 (``POST /v1/models/<name>:predict``)::

    {"instances": [{"b64": "<base64 PNG, JPEG or DICOM>"}, ...]}
    -> {"predictions": [{"label", "probabilities", "model_name", "model_version",
                         "prediction_id"}, ...]}

V2 (``POST /v2/models/<name>/infer``), exactly one input:

* ``image``, BYTES, shape ``[N]``: each element a base64-encoded PNG, JPEG or DICOM (raw bytes
  too, where a caller in this process hands KServe's ``InferRequest`` bytes);
* ``preprocessed``, FP32, shape ``[N, C, H, W]``: images already through the archive's
  preprocessing, C, H and W being the archive's own.

and two outputs: ``probabilities`` (FP32 ``[N, classes]``, the class order in its ``classes``
parameter) and ``label`` (BYTES ``[N]``). The response's ``prediction_ids`` parameter (a JSON
list) names each prediction as `fetal.predictions` and clinician feedback do.

Every client mistake is raised here as ``kserve.errors.InvalidInput``, which KServe's REST
server answers with HTTP 400 and the reason; images are decoded by the archive's own code.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from fetalmlops.inference.archive import Archive, Classifier, Decoded

IMAGE_INPUT = "image"
TENSOR_INPUT = "preprocessed"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
ANY = -1  # a variable dimension in V2 model metadata


@dataclass(frozen=True)
class Batch:
    """Preprocessed images, and the V2 request they came from (None for V1)."""

    images: tuple[Decoded, ...]
    request: InferRequest | None = None
    parameters: object = None  # a V1 body's "parameters" (what `:explain` is asked)

    @property
    def tensor(self) -> torch.Tensor:
        """The images stacked: (N, channels, size, size)."""
        return torch.stack([image.tensor for image in self.images])


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


def v1_batch(payload: object, archive: Archive) -> Batch:
    """``{"instances": [...]}``, each instance an image the archive's handler accepts."""
    if isinstance(payload, bytes | bytearray):
        # KServe hands over the raw body when the Content-Type is not JSON (curl -d sends
        # application/x-www-form-urlencoded): a JSON body is still what V1 means.
        try:
            payload = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InvalidInput('the body is not JSON: expected {"instances": [...]}') from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput(
            'expected a JSON object {"instances": [{"b64": "<PNG, JPEG or DICOM>"}]}'
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, not {type(instances).__name__}')
    if not instances:
        raise InvalidInput('"instances" is empty: nothing to predict')
    return Batch(images_from(instances, archive, "instance"), None, payload.get("parameters"))


def images_from(items: Sequence[object], archive: Archive, what: str) -> tuple[Decoded, ...]:
    images = []
    for index, item in enumerate(items):
        try:
            images.append(archive.decode(item))
        except ValueError as exc:
            raise InvalidInput(f"{what} {index}: {exc}") from None
    return tuple(images)


def v2_batch(request: InferRequest, archive: Archive) -> Batch:
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"expected exactly one input, {IMAGE_INPUT!r} or {TENSOR_INPUT!r}, "
            f"got {len(request.inputs)}"
        )
    infer_input = request.inputs[0]
    if infer_input.name == IMAGE_INPUT:
        return Batch(v2_images(infer_input, archive), request)
    if infer_input.name == TENSOR_INPUT:
        return Batch(v2_tensor(infer_input, archive), request)
    raise InvalidInput(
        f"unknown input {infer_input.name!r}: this model takes {IMAGE_INPUT!r} (BYTES, "
        f"base64 PNG, JPEG or DICOM) or {TENSOR_INPUT!r} (FP32 {[ANY, *archive.input_shape]})"
    )


def declared_size(infer_input: InferInput) -> int:
    shape = infer_input.shape
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"input {infer_input.name!r}: shape {shape} is not a list of sizes")
    return math.prod(shape)


def v2_images(infer_input: InferInput, archive: Archive) -> tuple[Decoded, ...]:
    if infer_input.datatype != "BYTES":
        raise InvalidInput(
            f"input {IMAGE_INPUT!r} must be BYTES (base64 PNG, JPEG or DICOM), "
            f"not {infer_input.datatype}"
        )
    items = flattened(infer_input.data)
    if len(items) != declared_size(infer_input):
        raise InvalidInput(
            f"input {IMAGE_INPUT!r}: shape {infer_input.shape} holds {declared_size(infer_input)} "
            f"elements, the data {len(items)}"
        )
    if not items:
        raise InvalidInput(f"input {IMAGE_INPUT!r} holds no image")
    return images_from(items, archive, f"input {IMAGE_INPUT!r} element")


def flattened(data: object) -> list[object]:
    """V2 tensor data in row-major order, however JSON nested it (iteratively: any depth)."""
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1))
    items: list[object] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, list | tuple):
            pending.extend(reversed(item))
        else:
            items.append(item)
    return items


def v2_tensor(infer_input: InferInput, archive: Archive) -> tuple[Decoded, ...]:
    expected = [ANY, *archive.input_shape]
    if infer_input.datatype != "FP32":
        raise InvalidInput(f"input {TENSOR_INPUT!r} must be FP32, not {infer_input.datatype}")
    size, shape = declared_size(infer_input), infer_input.shape
    if len(shape) != len(expected) or tuple(shape[1:]) != archive.input_shape or shape[0] < 1:
        raise InvalidInput(
            f"input {TENSOR_INPUT!r} has shape {shape}; this model's preprocessing gives "
            f"{expected} (N images of channels, height, width)"
        )
    try:
        data = infer_input.data
        values = infer_input.as_numpy() if data is None else np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {TENSOR_INPUT!r} is not a tensor of numbers: {exc}") from None
    if values.size != size:
        raise InvalidInput(
            f"input {TENSOR_INPUT!r}: shape {shape} holds {size} values, the data {values.size}"
        )
    if not np.isfinite(values).all():
        raise InvalidInput(f"input {TENSOR_INPUT!r} holds NaN or infinite values")
    # A copy: KServe's binary tensors are read-only views of the request body.
    tensors = torch.tensor(values.reshape(shape), dtype=torch.float32)
    return tuple(archive.decode_tensor(tensor) for tensor in tensors)


def v1_response(
    probabilities: torch.Tensor,
    classifier: Classifier,
    model_name: str,
    model_version: str,
    prediction_ids: Sequence[str],
) -> dict[str, Any]:
    return {
        "predictions": [
            {
                **classifier.prediction(row),
                "model_name": model_name,
                "model_version": model_version,
                "prediction_id": prediction_id,
            }
            for row, prediction_id in zip(probabilities, prediction_ids, strict=True)
        ]
    }


def v2_response(
    request: InferRequest,
    probabilities: torch.Tensor,
    classifier: Classifier,
    model_name: str,
    model_version: str,
    prediction_ids: Sequence[str],
) -> InferResponse:
    labels = [str(classifier.prediction(row)["label"]) for row in probabilities]
    outputs = [
        InferOutput(
            name=PROBABILITIES_OUTPUT,
            shape=list(probabilities.shape),
            datatype="FP32",
            data=probabilities.numpy().astype(np.float32),
            parameters={"classes": json.dumps(classifier.classes)},
        ),
        InferOutput(name=LABEL_OUTPUT, shape=[len(labels)], datatype="BYTES", data=labels),
    ]
    return InferResponse(
        # V2 answers carry an id; KServe's response model refuses none.
        response_id=request.id or uuid.uuid4().hex,
        model_name=model_name,
        model_version=model_version,
        infer_outputs=outputs,
        parameters={"prediction_ids": json.dumps(list(prediction_ids))},
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
