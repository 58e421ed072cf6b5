"""KServe's DataPlane, decoding request bodies as Triton and KServe's protocols mean them.

* A V2 body with ``Inference-Header-Content-Length`` is the binary tensor extension, decoded
  by `binary.py` (KServe's own decoder answers its mistakes with 500 and turns tensors into
  lists). A V2 body without that header is JSON, whatever its ``Content-Type``: tritonclient
  sends JSON with none, ``curl -d`` as form data, and KServe handed both over as bytes that
  it then refused for lacking the header.
* A V1 body is JSON whatever its ``Content-Type`` too; it is parsed here, so a body that is not
  JSON gets a reason of this service's rather than KServe's.
* The server metadata advertises the extensions the server implements: the repository
  extension (`routes.py` adds its index) and the binary tensor extension.
* An explanation's answer carries the headers its model set, not the request's: KServe's
  ``DataPlane.explain`` starts its response headers from the request headers, so every
  ``:explain`` answer repeated the client's Authorization, Host, User-Agent, x-request-id and
  whatever else it sent.

Every refusal is `Refused`, its reason quoting nothing of the request.
"""

from __future__ import annotations

import json
from typing import Any

from cloudevents.sdk.converters.util import has_binary_headers
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.model import InferenceModel, InferenceVerb
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError

from fetalmlops.inference.binary import binary_request
from fetalmlops.inference.refusals import Refused, schema_mistakes

EXTENSIONS = ["model_repository_extension", "binary_tensor_data"]
V1 = PredictorProtocol.REST_V1.value


class CheckedDataPlane(DataPlane):  # type: ignore[misc]  # kserve ships no type information
    """KServe's DataPlane, its decoding of request bodies replaced (see the module)."""

    def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = super().metadata()
        return {**metadata, "extensions": EXTENSIONS}

    async def explain(
        self, model_name: str, request: object, headers: dict[str, str] | None = None
    ) -> tuple[object, dict[str, str]]:
        model = await self.get_model(model_name)
        if not isinstance(model, InferenceModel):
            raise Refused("the model does not explain")
        answer: tuple[object, dict[str, str]] = await model(
            request, verb=InferenceVerb.EXPLAIN, headers=headers
        )
        response, model_headers = answer
        return response, dict(model_headers or {})

    def decode(
        self,
        body: object,
        headers: dict[str, str],
        protocol_version: str = V1,
        model_name: str | None = None,
    ) -> tuple[object, dict[str, Any]]:
        if protocol_version == V1 and isinstance(body, bytes) and not has_binary_headers(headers):
            body = json_body(body, 'expected {"instances": [...]}')
        decoded: tuple[object, dict[str, Any]] = super().decode(
            body, headers, protocol_version, model_name
        )
        return decoded

    def decode_inference_request(
        self, body: object, headers: dict[str, str], model_name: str
    ) -> InferRequest:
        if isinstance(body, bytes):
            json_length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
            if json_length is not None:
                return binary_request(body, json_length, model_name)
            body = v2_json(body)
        if not isinstance(body, InferenceRequest):
            raise Refused("expected a V2 inference request")
        for index, infer_input in enumerate(body.inputs):
            # KServe refuses it too, quoting the input's name.
            if infer_input.datatype == "FP16" and infer_input.data:
                raise Refused(
                    f"input {index}: FP16 data cannot be sent as JSON; use the binary tensor "
                    "extension"
                )
        request: InferRequest = InferRequest.from_inference_request(body, model_name)
        return request


def json_body(body: bytes, expected: str) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        # Their messages quote the bytes they stopped at.
        raise Refused(f"the body is not JSON: {expected}") from None


def v2_json(body: bytes) -> InferenceRequest:
    document = json_body(body, 'expected {"inputs": [...]} (or binary tensors, with the '
                         "Inference-Header-Content-Length header)")  # fmt: skip
    try:
        return InferenceRequest.model_validate(document)
    except ValidationError as exc:
        raise Refused(schema_mistakes(exc.errors())) from None
