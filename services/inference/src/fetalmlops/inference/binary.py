"""The V2 binary tensor extension: checked, then decoded without turning tensors into lists.

A request in the extension is a JSON header of ``Inference-Header-Content-Length`` bytes, then
each input's raw tensor in the order of ``inputs``, ``parameters.binary_data_size`` bytes each
(Triton's ``extension_binary_data.md``, which KServe's V2 protocol adopts). BYTES tensors are
elements of a 4-byte little-endian length, then that many bytes: raw image files, which is
how tritonclient sends ``np.array([open(f, "rb").read()], dtype=object)``.

KServe 0.21 decodes the extension without checking it (a wrong length or a malformed header
is HTTP 500, sizes that do not add up are accepted), then converts every binary tensor to JSON
data: an FP32 tensor becomes a Python list (8 times its size in memory), and a BYTES tensor
of image bytes fails as UTF-8 with a message that quotes the whole file. So this module checks
the request (`binary_request_mistake`) and builds KServe's ``InferRequest`` itself
(`binary_request`), each tensor a read-only view of the body.

Every reason names an input by its index and quotes nothing the client wrote, not even a
length header or a shape: a number can be a patient's record number.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from fetalmlops.inference.refusals import JSON_LENGTH_HEADER, Refused

# The KServe V2 (Open Inference) protocol's fixed-size tensor datatypes, in bytes per element.
# BYTES elements are variable: each is a 4-byte little-endian length, then that many bytes.
DATATYPE_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
}
DATATYPES = (*DATATYPE_BYTES, "BYTES")


def binary_request(body: bytes, json_length: str, model_name: str) -> InferRequest:
    """KServe's InferRequest for a request in the extension; raises Refused with the mistake.

    Binary tensors stay bytes: ``as_numpy`` reads FP32 as a view of the body and BYTES as
    the elements' bytes.
    """
    mistake = binary_request_mistake(body, json_length)
    if mistake is not None:
        raise Refused(mistake)
    length = int(json_length)
    header = json.loads(body[:length])
    view, start = memoryview(body), length
    inputs = []
    for item in header["inputs"]:
        infer_input = InferInput(
            name=item["name"],
            shape=item["shape"],
            datatype=item["datatype"],
            parameters=item.get("parameters"),
        )
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            infer_input.data = item["data"]
        else:
            # KServe's own decoder sets the same private field; the view copies nothing.
            infer_input._raw_data = view[start : start + size]
            start += size
        inputs.append(infer_input)
    outputs = [
        RequestedOutput(name=output["name"], parameters=output.get("parameters"))
        for output in header.get("outputs") or []
    ]
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        request_outputs=outputs or None,
    )


def binary_request_mistake(body: bytes, json_length: str | None) -> str | None:
    """What is wrong with a V2 request in the binary tensor extension, or None."""
    if json_length is None:
        return f"a binary tensor request needs the {JSON_LENGTH_HEADER} header"
    if not json_length.strip().isdigit():
        return f"{JSON_LENGTH_HEADER} must be a number of bytes"
    length = int(json_length)
    if length > len(body):
        return f"{JSON_LENGTH_HEADER} is more than the {len(body)} bytes of the body"
    try:
        request = json.loads(body[:length])
    except (UnicodeDecodeError, ValueError):
        return f"the first {JSON_LENGTH_HEADER} bytes of the body are not a JSON header"
    mistake = header_mistake(request)
    if mistake is not None:
        return mistake
    start = length
    for index, infer_input in enumerate(request["inputs"]):
        mistake = input_mistake(infer_input, index)
        if mistake is not None:
            return mistake
        size = (infer_input.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            mistake = binary_input_mistake(infer_input, index, body[start : start + size], size)
            if mistake is not None:
                return mistake
            start += size
    if start != len(body):
        return (
            f"the inputs' binary_data_size do not add up to the {len(body) - length} bytes "
            "that follow the JSON header"
        )
    return None


def header_mistake(request: object) -> str | None:
    """What KServe would fail on, with a 500, in the JSON header's top level."""
    if not isinstance(request, dict):
        return "the JSON header must be an object"
    if "id" in request and not isinstance(request["id"], str):
        return '"id" must be a string'
    if parameters_mistake(request.get("parameters")):
        return '"parameters" must be an object of strings, numbers and booleans'
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        return '"inputs" must be a list of objects'
    outputs = request.get("outputs") or []
    if not isinstance(outputs, list):
        return '"outputs" must be a list of objects with a "name"'
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            return f'output {index} must be an object with a "name"'
        if parameters_mistake(output.get("parameters")):
            return f'output {index}: "parameters" must be an object'
    return None


def parameters_mistake(parameters: object) -> bool:
    if parameters is None:
        return False
    if not isinstance(parameters, dict):
        return True
    return not all(isinstance(v, str | int | float | bool) for v in parameters.values())


def is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def input_mistake(infer_input: dict[str, Any], index: int) -> str | None:
    if not isinstance(infer_input.get("name"), str):
        return f'input {index} has no "name"'
    if infer_input.get("datatype") not in DATATYPES:
        return f"input {index}: unknown datatype (one of {', '.join(DATATYPES)})"
    shape = infer_input.get("shape")
    if not isinstance(shape, list) or not all(is_size(d) for d in shape):
        return f"input {index}: the shape is not a list of sizes"
    parameters = infer_input.get("parameters") or {}
    if parameters_mistake(parameters):
        return f'input {index}: "parameters" must be an object'
    size = parameters.get("binary_data_size")
    if size is None:
        return None if "data" in infer_input else f'input {index} has no "data"'
    if not is_size(size):
        return f"input {index}: binary_data_size must be a number of bytes"
    if "data" in infer_input:
        return f'input {index} has both "data" and binary_data_size'
    return None


def binary_input_mistake(
    infer_input: dict[str, Any], index: int, raw: bytes, size: int
) -> str | None:
    datatype, shape = infer_input["datatype"], infer_input["shape"]
    if len(raw) < size:
        return f"input {index}: binary_data_size is more than the {len(raw)} bytes left"
    elements = math.prod(shape)
    if datatype != "BYTES":
        if size == elements * DATATYPE_BYTES[datatype]:
            return None
        return f"input {index}: its shape of {datatype} does not take binary_data_size bytes"
    count, offset = 0, 0
    while offset < size:
        if offset + 4 > size:
            return f"input {index}: BYTES element {count} is cut off in its length"
        (item,) = struct.unpack_from("<I", raw, offset)
        offset += 4 + item
        if offset > size:
            return f"input {index}: BYTES element {count} is cut off"
        count += 1
    if count != elements:
        return f"input {index}: its shape and its data hold different numbers of elements"
    return None
