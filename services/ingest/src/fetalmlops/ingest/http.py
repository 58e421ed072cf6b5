"""Ingest's HTTP API: plain REST upload, DICOMweb STOW-RS, labels and clinicians' feedback,
behind bearer-token scopes.

Verdicts become status codes through ``statuses``; a message bus that cannot announce an upload
is a 503 with ``Retry-After`` on every route, as sending the same request again is safe.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Request,
    Response,
    UploadFile,
    params,
    status,
)
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fetalmlops.common.bus import BusUnavailable
from fetalmlops.common.db import IngestChannel
from fetalmlops.ingest import stow
from fetalmlops.ingest.auth import FEEDBACK_WRITE, IMAGES_WRITE, LABELS_WRITE, require
from fetalmlops.ingest.feedback import FeedbackRequest, publish_feedback
from fetalmlops.ingest.intake import REFUSED, Intake, Outcome, Provenance
from fetalmlops.ingest.labels import LabelRequest, publish_label
from fetalmlops.ingest.statuses import (
    BUS_UNAVAILABLE_DETAIL,
    BUS_UNAVAILABLE_HTTP,
    DICOM_STATUS,
    HTTP_STATUS,
    PROCESSING_FAILURE,
    RETRY_AFTER_S,
)
from fetalmlops.ingest.validation import Invalid, Verdict

log = logging.getLogger(__name__)
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_S)}


class UploadChannel(StrEnum):
    REST = IngestChannel.REST.value
    IMPORT = IngestChannel.IMPORT.value


# A multipart body may carry several instances plus their framing.
STOW_BODY_FACTOR = 4


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body exceeds {limit} bytes")
    return bytes(body)


def add_routes(app: FastAPI, intake: Intake) -> None:
    """The error handlers, then every route in the order the OpenAPI document lists them."""
    can_write_images = Depends(require(IMAGES_WRITE, intake.limits))
    add_error_handlers(app)
    add_upload_route(app, intake, can_write_images)
    add_label_route(app, intake)
    add_feedback_route(app, intake)
    add_stow_routes(app, intake, can_write_images)


def add_error_handlers(app: FastAPI) -> None:
    """The one place a verdict, or a bus that is down, becomes an HTTP answer."""

    @app.exception_handler(Invalid)
    async def refused(request: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.reason, "verdict": exc.verdict.value}, HTTP_STATUS[exc.verdict]
        )

    @app.exception_handler(BusUnavailable)
    async def bus_unavailable(request: Request, exc: BusUnavailable) -> JSONResponse:
        return JSONResponse({"detail": BUS_UNAVAILABLE_DETAIL}, BUS_UNAVAILABLE_HTTP, RETRY_AFTER)


def add_upload_route(app: FastAPI, intake: Intake, can_write_images: params.Depends) -> None:
    """`POST /v1/images`: one image per multipart request, from a person or an importer."""
    limits = intake.limits

    @app.post(
        "/v1/images",
        tags=["ingest"],
        status_code=status.HTTP_201_CREATED,
        dependencies=[can_write_images],
        responses={
            200: {"description": "Already received: neither stored nor announced again"},
            503: {"description": "The message bus is unavailable: send it again (Retry-After)"},
        },
    )
    async def upload(
        file: UploadFile = File(...),  # noqa: B008
        channel: UploadChannel = Form(UploadChannel.REST),  # noqa: B008
        cohort: str = Form("", max_length=64, pattern=r"^[A-Za-z0-9._:-]*$"),
        patient_id: str = Form("", max_length=64),
    ) -> JSONResponse:
        """Upload one DICOM, PNG or JPEG image (multipart/form-data field `file`).

        Dataset importers send `channel=import` so the record says how the image came, the
        `cohort` the image belongs to and, for PNG/JPEG, the `patient_id` it shows (kept in
        the raw zone only; a DICOM's own PatientID takes precedence).
        """
        data = await file.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise Invalid(Verdict.TOO_LARGE, f"file exceeds {limits.max_bytes} bytes")
        # Validation, hashing and the stores block: keep them off the event loop.
        receipt = await run_in_threadpool(
            intake.receive, data, IngestChannel(channel.value), Provenance(cohort, patient_id)
        )
        code = status.HTTP_201_CREATED if receipt.outcome is Outcome.STORED else status.HTTP_200_OK
        body = {
            "sha256": receipt.sha256,
            "outcome": receipt.outcome.value,
            "media_type": receipt.image.media_type,
        }
        return JSONResponse(body, code)


def add_label_route(app: FastAPI, intake: Intake) -> None:
    """`POST /v1/labels`: a label is an event for the trainer, not something ingest stores."""

    @app.post(
        "/v1/labels",
        tags=["labels"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(require(LABELS_WRITE, intake.limits))],
    )
    def attach_label(request: LabelRequest) -> dict[str, str]:
        """Attach a plane (and brain sub-plane) to an image; published on fetal.labels."""
        try:
            event_id = publish_label(intake.bus, intake.settings, request)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        return {"event_id": event_id, "status": "accepted"}


def add_feedback_route(app: FastAPI, intake: Intake) -> None:
    """`POST /v1/feedback`: for clinical apps that cannot reach the bus themselves."""

    @app.post(
        "/v1/feedback",
        tags=["feedback"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(require(FEEDBACK_WRITE, intake.limits))],
        responses={
            503: {"description": "The message bus is unavailable: send it again (Retry-After)"}
        },
    )
    def give_feedback(request: FeedbackRequest) -> dict[str, str]:
        """A clinician's true plane for a served prediction; published on fetal.feedback.

        Sent again, it is the same correction again: the monitor keeps the latest reading.
        """
        event_id = publish_feedback(intake.bus, intake.settings, request)
        return {"event_id": event_id, "status": "accepted"}


STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every instance stored"},
    202: {"description": "Some instances stored, the others in FailedSOPSequence"},
    401: {"description": "No bearer token, or an unknown one"},
    403: {"description": "The token lacks the images:write scope"},
    406: {"description": "The client accepts neither application/dicom+json nor +xml"},
    409: {"description": "No instance stored; each has a FailureReason"},
    413: {"description": "The body is over the limit"},
    415: {"description": 'Not multipart/related; type="application/dicom"'},
    503: {"description": "The message bus is unavailable: send it again (Retry-After)"},
}


def add_stow_routes(app: FastAPI, intake: Intake, can_write_images: params.Depends) -> None:
    """DICOMweb STOW-RS (PS3.18 §10.5), to any study or to the one the path names."""

    @app.post(
        "/dicomweb/studies",
        tags=["dicomweb"],
        dependencies=[can_write_images],
        responses=STOW_RESPONSES,
    )
    async def store_instances(request: Request) -> Response:
        """STOW-RS: `multipart/related; type="application/dicom"`, one instance per part."""
        return await store(intake, request, None)

    @app.post(
        "/dicomweb/studies/{study}",
        tags=["dicomweb"],
        dependencies=[can_write_images],
        responses={**STOW_RESPONSES, 400: {"description": "The path holds no valid UID"}},
    )
    async def store_study_instances(request: Request, study: str) -> Response:
        """STOW-RS to one study: an instance of any other study fails (FailureReason A901)."""
        if not stow.is_uid(study):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the path holds no valid Study UID")
        return await store(intake, request, study)


async def store(intake: Intake, request: Request, study: str | None) -> Response:
    """One STOW-RS request: refused whole only when the request itself is wrong."""
    try:
        media_type = stow.response_type(request.headers.get("accept", ""))
    except stow.NotAcceptable as exc:
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE, str(exc)) from None
    body = await read_limited(request, intake.limits.max_bytes * STOW_BODY_FACTOR)
    try:
        instances = stow.parts(request.headers.get("content-type", ""), body)
    except stow.StowRequestError as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
    stored, failures, bus_unavailable = await store_each(intake, instances, study)
    code, payload = stow.response(stored, failures, bus_unavailable)
    headers = RETRY_AFTER if bus_unavailable else None
    return Response(stow.encode(payload, media_type), code, headers, media_type=media_type)


async def store_each(
    intake: Intake, instances: list[stow.Part], study: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Each instance stored or failed on its own, as STOW-RS answers per instance.

    Returns the referenced and the failed SOP items, and whether the bus was found down.
    """
    stored: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    bus_unavailable = False
    for part in instances:
        if bus_unavailable:
            # The rest would wait for the bus in turn; the client sends them again anyway.
            failures.append(stow.failed(part, PROCESSING_FAILURE))
            continue
        try:
            stow.admissible(part, study)
        except Invalid as exc:
            REFUSED.labels(IngestChannel.STOW_RS.value, exc.verdict.value).inc()
            failures.append(stow.failed(part, DICOM_STATUS[exc.verdict]))
            continue
        try:
            await run_in_threadpool(intake.receive, part.data, IngestChannel.STOW_RS)
            stored.append(stow.referenced(part))
        except Invalid as exc:
            failures.append(stow.failed(part, DICOM_STATUS[exc.verdict]))
        except BusUnavailable:
            bus_unavailable = True
            failures.append(stow.failed(part, PROCESSING_FAILURE))
        except Exception:
            log.exception("STOW-RS instance could not be stored")
            failures.append(stow.failed(part, PROCESSING_FAILURE))
    return stored, failures, bus_unavailable
