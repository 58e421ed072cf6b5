"""Ingest's HTTP API: plain REST upload and DICOMweb STOW-RS, behind bearer-token scopes.

This is the one place that maps validation verdicts onto HTTP status codes.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from fetalmlops.common.db import IngestChannel
from fetalmlops.ingest import stow
from fetalmlops.ingest.auth import IMAGES_WRITE, LABELS_WRITE, require
from fetalmlops.ingest.intake import Intake, Outcome, Provenance
from fetalmlops.ingest.labels import LabelRequest, publish_label
from fetalmlops.ingest.validation import Invalid, Verdict

log = logging.getLogger(__name__)

HTTP_STATUS = {
    Verdict.UNSUPPORTED: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    Verdict.TOO_LARGE: status.HTTP_413_CONTENT_TOO_LARGE,
    Verdict.NOT_ALLOWED: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Verdict.CORRUPT: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


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
    limits = intake.limits
    can_write_images = Depends(require(IMAGES_WRITE, limits))

    @app.exception_handler(Invalid)
    async def refused(request: Request, exc: Invalid) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.reason, "verdict": exc.verdict.value}, HTTP_STATUS[exc.verdict]
        )

    @app.post(
        "/v1/images",
        tags=["ingest"],
        status_code=status.HTTP_201_CREATED,
        dependencies=[can_write_images],
        responses={200: {"description": "Already received: neither stored nor announced again"}},
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

    @app.post(
        "/v1/labels",
        tags=["labels"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(require(LABELS_WRITE, limits))],
    )
    def attach_label(request: LabelRequest) -> dict[str, str]:
        """Attach a plane (and brain sub-plane) to an image; published on fetal.labels."""
        try:
            event_id = publish_label(intake.bus, intake.settings, request)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        return {"event_id": event_id, "status": "accepted"}

    @app.post("/dicomweb/studies", tags=["dicomweb"], dependencies=[can_write_images])
    async def store_instances(request: Request) -> JSONResponse:
        """STOW-RS: `multipart/related; type="application/dicom"`, one instance per part."""
        body = await read_limited(request, limits.max_bytes * STOW_BODY_FACTOR)
        try:
            instances = stow.parts(request.headers.get("content-type", ""), body)
        except stow.StowRequestError as exc:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
        stored: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for part in instances:
            try:
                await run_in_threadpool(intake.receive, part.data, IngestChannel.STOW_RS)
                stored.append(stow.referenced(part))
            except Invalid as exc:
                failures.append(stow.failed(part, stow.FAILURE_REASON[exc.verdict]))
            except Exception:
                log.exception("STOW-RS instance could not be stored")
                failures.append(stow.failed(part, stow.PROCESSING_FAILURE))
        code, payload = stow.response(stored, failures)
        return JSONResponse(payload, code, media_type=stow.MEDIA_TYPE)
