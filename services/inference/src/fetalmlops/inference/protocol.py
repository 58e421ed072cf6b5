"""KServe's V1 and V2 protocols to and from the model's tensors: what a client may send.

V1 (``POST /v1/models/<name>:predict``), TensorFlow Serving's request formats::

    {"instances": [{"b64": "<base64 PNG, JPEG or DICOM>"}, ...]}
    {"instances": [{"image_bytes": {"b64": "..."}}, ...]}   (Vertex AI's name for the input)
    {"inputs": [...]} or {"inputs": {"<input>": [...]}}     (the columnar format)
    -> {"predictions": [{"label", "probabilities", "model_name", "model_version", "arm",
                         "prediction_id"}, ...]}

V2 (``POST /v2/models/<name>/infer``), exactly one input:

* ``image``, BYTES, shape ``[N]``: each element a PNG, JPEG or DICOM, base64-encoded in JSON,
  raw bytes in the binary tensor extension (`binary.py`);
* ``preprocessed``, FP32, shape ``[N, C, H, W]``: images already through the archive's
  preprocessing (the model metadata's parameters say how, `metadata.py`).

and two outputs: ``probabilities`` (FP32 ``[N, classes]``, the class order in its ``classes``
parameter) and ``label`` (BYTES ``[N]``). The response's ``prediction_ids`` parameter (a JSON
list) names each prediction as `fetal.predictions` and clinician feedback do.

Every answer names the version and the arm of a rollout that made it (V1: ``model_version``
and ``arm`` beside each prediction; V2: the response's ``model_version`` and its ``arm``
parameter): ``champion``, or ``challenger`` for a canary request the challenger answered.

Every client mistake is raised here as `Refused` (HTTP 400, `TooLarge` 413 beyond the limits of
`limits.py`) with a reason that names inputs and outputs by the names the model declares or by
their index, never by what the client wrote; images are decoded by the archive's own code.
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
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from fetalmlops.inference.archive import Archive, Classifier, Decoded
from fetalmlops.inference.arms import Arm
from fetalmlops.inference.binary import DATATYPES
from fetalmlops.inference.limits import ImageLimits, check_count
from fetalmlops.inference.metadata import (
    ANY,
    IMAGE_INPUT,
    LABEL_OUTPUT,
    OUTPUTS,
    PROBABILITIES_OUTPUT,
    TENSOR_INPUT,
)
from fetalmlops.inference.refusals import Refused

# TensorFlow Serving's b64 wrapper under the input name Vertex AI and AI Platform give images.
VERTEX_IMAGE = "image_bytes"
V1_EXPECTED = 'expected a JSON object {"instances": [{"b64": "<PNG, JPEG or DICOM>"}]}'


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


def v1_batch(payload: object, archive: Archive, limits: ImageLimits | None = None) -> Batch:
    """``{"instances": [...]}`` or ``{"inputs": ...}``, each item an image the archive's
    handler accepts."""
    limits = limits or ImageLimits()
    if isinstance(payload, bytes | bytearray):
        # KServe hands over the raw body when the Content-Type is not JSON (curl -d sends
        # application/x-www-form-urlencoded): a JSON body is still what V1 means.
        try:
            payload = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise Refused('the body is not JSON: expected {"instances": [...]}') from None
    if not isinstance(payload, dict) or not ("instances" in payload or "inputs" in payload):
        raise Refused(V1_EXPECTED)
    key = "instances" if "instances" in payload else "inputs"
    items = columns(payload[key]) if key == "inputs" else payload[key]
    if not isinstance(items, list):
        raise Refused(f'"{key}" must be a list, not {type(items).__name__}')
    if not items:
        raise Refused(f'"{key}" is empty: nothing to predict')
    if all(isinstance(i, dict) and "datatype" in i and "shape" in i for i in items):
        raise Refused("this is a V2 request: send it to /v2/models/<name>/infer")
    check_count(len(items), limits)
    unwrapped = [unwrap(item) for item in items]
    images = images_from(unwrapped, archive, "instance", limits)
    return Batch(images, None, payload.get("parameters"))


def columns(inputs: object) -> object:
    """TensorFlow Serving's columnar ``inputs``: a list, or one named input holding a list."""
    if isinstance(inputs, dict):
        if len(inputs) != 1:
            raise Refused('"inputs" must name one input: this model takes one image per row')
        (inputs,) = inputs.values()
    return inputs


def unwrap(item: object) -> object:
    if isinstance(item, dict) and VERTEX_IMAGE in item:
        return item[VERTEX_IMAGE]
    return item


def images_from(
    items: Sequence[object], archive: Archive, what: str, limits: ImageLimits
) -> tuple[Decoded, ...]:
    images = []
    for index, item in enumerate(items):
        try:
            images.append(archive.decode(item, limits))
        except Refused as exc:
            raise type(exc)(f"{what} {index}: {exc.reason}") from None
        except ValueError as exc:
            # The archive's handler and `Archive.decode` write reasons that quote nothing.
            raise Refused(f"{what} {index}: {exc}") from None
    return tuple(images)


def v2_batch(request: InferRequest, archive: Archive, limits: ImageLimits | None = None) -> Batch:
    limits = limits or ImageLimits()
    if len(request.inputs) != 1:
        raise Refused(
            f"expected exactly one input, {IMAGE_INPUT!r} or {TENSOR_INPUT!r}, "
            f"got {len(request.inputs)}"
        )
    for index, output in enumerate(request.request_outputs or []):
        if output.name not in OUTPUTS:
            raise Refused(
                f"output {index} is not one this model gives: {' or '.join(map(repr, OUTPUTS))}"
            )
    infer_input = request.inputs[0]
    if infer_input.name == IMAGE_INPUT:
        return Batch(v2_images(infer_input, archive, limits), request)
    if infer_input.name == TENSOR_INPUT:
        return Batch(v2_tensor(infer_input, archive, limits), request)
    raise Refused(
        f"input 0 is not one this model takes: {IMAGE_INPUT!r} (BYTES, PNG, JPEG or DICOM) "
        f"or {TENSOR_INPUT!r} (FP32 {[ANY, *archive.input_shape]})"
    )


def datatype_of(infer_input: InferInput) -> str:
    """The input's datatype where it is one the protocol names; a client's own word is not
    repeated."""
    datatype = infer_input.datatype
    return datatype if datatype in DATATYPES else "an unknown datatype"


def declared_size(infer_input: InferInput, name: str) -> int:
    shape = infer_input.shape
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise Refused(f"input {name!r}: the shape is not a list of sizes")
    return math.prod(shape)


def v2_images(
    infer_input: InferInput, archive: Archive, limits: ImageLimits
) -> tuple[Decoded, ...]:
    if infer_input.datatype != "BYTES":
        raise Refused(
            f"input {IMAGE_INPUT!r} must be BYTES (PNG, JPEG or DICOM), "
            f"not {datatype_of(infer_input)}"
        )
    size = declared_size(infer_input, IMAGE_INPUT)
    # Binary tensors (`binary.py`) have no JSON data: their elements are the body's bytes.
    data = infer_input.as_numpy() if infer_input.data is None else infer_input.data
    items = flattened(data)
    if len(items) != size:
        raise Refused(
            f"input {IMAGE_INPUT!r}: its shape and its data hold different numbers of elements"
        )
    if not items:
        raise Refused(f"input {IMAGE_INPUT!r} holds no image")
    check_count(len(items), limits)
    return images_from(items, archive, f"input {IMAGE_INPUT!r} element", limits)


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


def v2_tensor(
    infer_input: InferInput, archive: Archive, limits: ImageLimits
) -> tuple[Decoded, ...]:
    expected = [ANY, *archive.input_shape]
    if infer_input.datatype != "FP32":
        raise Refused(f"input {TENSOR_INPUT!r} must be FP32, not {datatype_of(infer_input)}")
    size, shape = declared_size(infer_input, TENSOR_INPUT), infer_input.shape
    if len(shape) != len(expected) or tuple(shape[1:]) != archive.input_shape or shape[0] < 1:
        raise Refused(
            f"input {TENSOR_INPUT!r}: this model's preprocessing gives {expected} "
            "(N images of channels, height, width)"
        )
    check_count(shape[0], limits)
    try:
        data = infer_input.data
        values = infer_input.as_numpy() if data is None else np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        # numpy's message quotes the value it could not convert.
        raise Refused(f"input {TENSOR_INPUT!r} is not a tensor of numbers") from None
    if values.size != size:
        raise Refused(
            f"input {TENSOR_INPUT!r}: its shape and its data hold different numbers of values"
        )
    if not np.isfinite(values).all():
        raise Refused(f"input {TENSOR_INPUT!r} holds NaN or infinite values")
    # A copy: binary tensors are read-only views of the request body.
    tensors = torch.tensor(values.reshape(shape), dtype=torch.float32)
    return tuple(archive.decode_tensor(tensor) for tensor in tensors)


def v1_response(
    probabilities: torch.Tensor,
    classifier: Classifier,
    model_name: str,
    model_version: str,
    prediction_ids: Sequence[str],
    arm: Arm,
) -> dict[str, Any]:
    return {
        "predictions": [
            {
                **classifier.prediction(row),
                "model_name": model_name,
                "model_version": model_version,
                "arm": arm.value,
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
    arm: Arm,
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
        parameters={"prediction_ids": json.dumps(list(prediction_ids)), "arm": arm.value},
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )
