"""The V2 binary tensor extension and the data plane's decoding of request bodies.

Requests are built as tritonclient and KServe's own InferRequest build them; every mistake
must be named without a byte of what the client wrote, and every well-formed request must
decode to the tensors it carries, binary tensors as views of the body.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest

from fetalmlops.inference.binary import binary_request, binary_request_mistake
from fetalmlops.inference.dataplane import CheckedDataPlane
from fetalmlops.inference.refusals import Refused

FP32 = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
HEADER = "inference-header-content-length"
# A client's own words and numbers: no reason may repeat them.
CANARY, NUMBER = "CANARY-Doe^Jane", 73195824


def binary(header: object, raw: bytes = FP32.tobytes(), length_delta: int = 0) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + raw, str(len(text) + length_delta)


def fp32_input(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "preprocessed", "datatype": "FP32", "shape": [2, 3],
                        "parameters": {"binary_data_size": FP32.nbytes}} | changes]}  # fmt: skip


def encoded(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def bytes_input(count: int, size: int) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [count],
                        "parameters": {"binary_data_size": size}}]}  # fmt: skip


def test_well_formed_binary_requests_pass() -> None:
    assert binary_request_mistake(*binary(fp32_input())) is None
    images = encoded(b"\x89PNG one", b"\xff\xd8 two")
    assert binary_request_mistake(*binary(bytes_input(2, len(images)), images)) is None
    assert binary_request_mistake(*binary(fp32_input(data=[1.0] * 6, parameters={}), b"")) is None


BINARY_MISTAKES = [
    (binary(fp32_input())[0], None, "needs the Inference-Header-Content-Length header"),
    (binary(fp32_input())[0], "abc", "Inference-Header-Content-Length must be a number of bytes"),
    (binary(fp32_input())[0], "-5", "must be a number of bytes"),
    (binary(fp32_input())[0], CANARY, "must be a number of bytes"),
    (*binary(fp32_input(), length_delta=NUMBER), "is more than the"),
    (*binary(fp32_input(), length_delta=-2), "are not a JSON header"),
    (*binary({"inputs": "x"}, b""), '"inputs" must be a list of objects'),
    (*binary({"outputs": []}, b""), '"inputs" must be a list of objects'),
    (*binary(["not", "an", "object"], b""), "must be an object"),
    (*binary(fp32_input() | {"id": NUMBER}), '"id" must be a string'),
    (*binary(fp32_input() | {"parameters": CANARY}), '"parameters" must be an object'),
    (*binary(fp32_input() | {"parameters": {CANARY: [CANARY]}}), '"parameters" must be an'),
    (*binary(fp32_input(name=None)), 'input 0 has no "name"'),
    (*binary(fp32_input(datatype=CANARY)), "input 0: unknown datatype (one of BOOL,"),
    (*binary(fp32_input(shape=CANARY)), "input 0: the shape is not a list of sizes"),
    (*binary(fp32_input(shape=[2, -3])), "is not a list of sizes"),
    (*binary(fp32_input(parameters=CANARY)), 'input 0: "parameters" must be an object'),
    (*binary(fp32_input(parameters={"binary_data_size": CANARY})), "binary_data_size must be"),
    (*binary(fp32_input(shape=[NUMBER, 3])), "does not take binary_data_size bytes"),
    (*binary(fp32_input(parameters={"binary_data_size": NUMBER})), "more than the 24 bytes left"),
    (*binary(fp32_input(), FP32.tobytes() + b"tail"), "do not add up to the 28 bytes"),
    (*binary(fp32_input(parameters={})), 'input 0 has no "data"'),
    (*binary(fp32_input(data=[1.0])), 'input 0 has both "data" and binary_data_size'),
    (*binary(fp32_input() | {"outputs": [{}]}), 'output 0 must be an object with a "name"'),
    (*binary(fp32_input() | {"outputs": [{"name": "label", "parameters": CANARY}]}), "output 0"),
    (*binary(bytes_input(1, 8), b"\xff\x00\x00\x00abcd"), "BYTES element 0 is cut off"),
    (*binary(bytes_input(1, 2), b"\x01\x00"), "element 0 is cut off in its length"),
    (*binary(bytes_input(NUMBER, 14), encoded(b"a", b"bcdef")), "different numbers of elements"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "length", "reason"), BINARY_MISTAKES)
def test_binary_request_mistakes_are_named_without_quoting(
    body: bytes, length: str | None, reason: str
) -> None:
    mistake = binary_request_mistake(body, length)
    assert mistake is not None and reason in mistake, mistake
    assert CANARY not in mistake and str(NUMBER) not in mistake


def test_a_binary_request_decodes_to_views_of_its_body() -> None:
    png, dicom = b"\x89PNG\r\n\x1a\n\x00\xff raw", b"\x00" * 128 + b"DICM\xfe\xff"
    images = encoded(png, dicom)
    header = bytes_input(2, len(images)) | {"id": "r-7", "outputs": [{"name": "label"}]}
    body, length = binary(header, images)
    request = binary_request(body, length, "m")
    assert (request.id, request.model_name, request.request_outputs[0].name) == (
        "r-7",
        "m",
        "label",
    )
    (infer_input,) = request.inputs
    assert infer_input.data is None  # not turned into JSON data as KServe does
    assert list(infer_input.as_numpy()) == [png, dicom]  # bytes, not UTF-8 text

    body, length = binary(fp32_input())
    tensor = binary_request(body, length, "m").inputs[0].as_numpy()
    assert np.array_equal(tensor, FP32)
    assert not tensor.flags.writeable and not tensor.flags.owndata  # a view of the body
    with pytest.raises(Refused, match="must be a number of bytes"):
        binary_request(body, "12o", "m")


def test_kserve_answers_binary_mistakes_with_500_and_the_data_plane_with_400() -> None:
    body, length = binary(fp32_input())
    # KServe's own DataPlane: ValueError (HTTP 500), and raw image bytes fail as UTF-8.
    with pytest.raises(ValueError, match="invalid literal") as kserve:
        DataPlane(ModelRepository()).decode_inference_request(body, {HEADER: "abc"}, "m")
    assert not isinstance(kserve.value, InvalidInput)
    images = encoded(b"\x89PNG\r\n\x1a\n\xff" + CANARY.encode())
    raw, raw_length = binary(bytes_input(1, len(images)), images)
    with pytest.raises(Exception, match=re.escape(CANARY)):
        DataPlane(ModelRepository()).decode_inference_request(raw, {HEADER: raw_length}, "m")

    checked = CheckedDataPlane(model_registry=ModelRepository())
    with pytest.raises(Refused, match="must be a number of bytes"):
        checked.decode_inference_request(body, {HEADER: "abc"}, "m")
    request = checked.decode_inference_request(body, {HEADER: length}, "m")
    assert np.array_equal(request.inputs[0].as_numpy(), FP32)
    (image,) = checked.decode_inference_request(raw, {HEADER: raw_length}, "m").inputs
    assert image.as_numpy()[0].endswith(CANARY.encode())


def json_request(**changes: Any) -> bytes:
    tensor = {
        "name": "preprocessed",
        "datatype": "FP32",
        "shape": [2, 3],
        "data": FP32.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor | changes]}).encode()  # fmt: skip


def test_a_body_without_the_length_header_is_json_whatever_its_content_type() -> None:
    checked = CheckedDataPlane(model_registry=ModelRepository())
    # What FastAPI hands over when the Content-Type is not JSON (or absent): the raw bytes.
    request: InferRequest = checked.decode_inference_request(json_request(), {}, "m")
    (infer_input,) = request.inputs
    assert isinstance(infer_input, InferInput)
    assert np.array_equal(np.asarray(infer_input.data, np.float32).reshape(2, 3), FP32)

    with pytest.raises(Refused, match="the body is not JSON") as refused:
        checked.decode_inference_request(b"\x89PNG " + CANARY.encode(), {}, "m")
    assert CANARY not in refused.value.reason
    with pytest.raises(Refused, match=r"inputs\.0\.shape") as refused:
        checked.decode_inference_request(json_request(shape=CANARY), {}, "m")
    assert CANARY not in refused.value.reason
    with pytest.raises(Refused, match="input 0: FP16 data cannot be sent as JSON") as refused:
        checked.decode_inference_request(json_request(datatype="FP16", name=CANARY), {}, "m")
    assert CANARY not in refused.value.reason


def test_v1_bodies_are_json_whatever_their_content_type() -> None:
    checked = CheckedDataPlane(model_registry=ModelRepository())
    body = json.dumps({"instances": [{"b64": "AAAA"}]}).encode()
    for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
        decoded, _ = checked.decode(body, {"content-type": content_type})
        assert decoded == {"instances": [{"b64": "AAAA"}]}, content_type
    with pytest.raises(Refused, match="the body is not JSON") as refused:
        checked.decode(b"{" + CANARY.encode(), {"content-type": "application/json"})
    assert CANARY not in refused.value.reason
