"""The V2 routes this server answers itself, registered before KServe's so they take precedence.

KServe 0.21 advertises what it does not do: its model metadata says ``"versions": null`` while
every answer carries a ``model_version``, every ``/versions/<version>/`` route answers 501, and
the server metadata lists ``model_repository_extension`` while the extension's index
(``POST /v2/repository/index``, which tritonclient's ``get_model_repository_index`` calls)
is 404. Here:

* ``GET /v2/models/<name>`` is the model's own metadata (`metadata.py`): its version, and the
  preprocessing a client must apply to send the ``preprocessed`` tensor;
* ``/v2/models/<name>/versions/<version>`` (metadata), ``.../ready`` and ``.../infer`` answer
  for the version served and 404 for any other;
* ``POST /v2/repository/index`` lists the models, Triton's way (``name``, ``version``,
  ``state`` READY or UNAVAILABLE, ``reason``), only the ready ones with ``{"ready": true}``; a
  model awaiting its first promoted version has no version and says so in its reason;
* ``POST /v2/repository/models/<name>/load`` of a model never registered is 404, not 503.

A model awaiting its first promoted version answers its metadata and version routes 503, as
KServe's own routes answer for it. A 404 never repeats the name or version of the path: both
are the client's.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from kserve.protocol.rest.v2_endpoints import V2Endpoints

from fetalmlops.inference.dataplane import CheckedDataPlane
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.refusals import NotServed, Refused


class KnownModelsRepository(ModelRepositoryExtension):  # type: ignore[misc]
    """The V2 repository extension; ``load`` of a name never registered is 404, not 503."""

    async def load(self, model_name: str) -> None:
        if self._model_registry.get_model(model_name) is None:
            raise ModelNotFound()
        await super().load(model_name)


def served(registry: ModelRepository, model_name: str) -> PlanePredictor:
    model = registry.get_model(model_name)
    if not isinstance(model, PlanePredictor):
        raise ModelNotFound()  # answered with the names served (`refusals.not_found`)
    return model


def at_version(registry: ModelRepository, model_name: str, version: str) -> PlanePredictor:
    model = served(registry, model_name)
    if version != model.model_version:
        raise NotServed(f"this model serves version {model.model_version} only")
    return model


async def repository_index(registry: ModelRepository, body: bytes) -> list[dict[str, Any]]:
    """Triton's model repository index: every model, or the ready ones with ``{"ready": true}``."""
    try:
        options = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refused('the body must be empty or JSON: {"ready": true | false}') from None
    if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
        raise Refused('the body must be empty or JSON: {"ready": true | false}')
    index = []
    for name, model in sorted(registry.get_models().items()):
        ready = bool(await registry.is_model_ready(name))
        if options.get("ready") and not ready:
            continue
        version, reason = "", ""
        if isinstance(model, PlanePredictor) and model.awaiting_first_version:
            reason = "awaiting its first promoted version"
        elif isinstance(model, PlanePredictor):
            version = model.model_version
        state = "READY" if ready else "UNAVAILABLE"
        index.append({"name": name, "version": version, "state": state, "reason": reason})
    return index


def protocol_routes(dataplane: CheckedDataPlane, extension: ModelRepositoryExtension) -> APIRouter:
    registry: ModelRepository = dataplane.model_registry
    endpoints = V2Endpoints(dataplane, extension)
    router = APIRouter(prefix="/v2", tags=["V2"])

    @router.get("/models/{model_name}")
    async def model_metadata(model_name: str) -> dict[str, Any]:
        return served(registry, model_name).metadata()

    @router.get("/models/{model_name}/versions/{model_version}")
    async def version_metadata(model_name: str, model_version: str) -> dict[str, Any]:
        return at_version(registry, model_name, model_version).metadata()

    @router.get("/models/{model_name}/versions/{model_version}/ready")
    async def version_ready(model_name: str, model_version: str) -> Any:
        at_version(registry, model_name, model_version)
        return await endpoints.model_ready(model_name)

    @router.post("/models/{model_name}/versions/{model_version}/infer", response_model=None)
    async def version_infer(
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        model_version: str,
        request_body: InferenceRequest | bytes,
    ) -> Any:
        at_version(registry, model_name, model_version)
        return await endpoints.infer(raw_request, raw_response, model_name, request_body)

    @router.post("/repository/index")
    async def index(request: Request) -> list[dict[str, Any]]:
        return await repository_index(registry, await request.body())

    return router
