"""DICOMweb STOW-RS (PS3.18 §10.5): multipart/related in, a DICOM JSON response out.

Each part is stored on its own; the response lists stored instances in ReferencedSOPSequence
and refused ones in FailedSOPSequence with a FailureReason, and the status code says whether all
(200), some (202) or none (409) were stored.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import pydicom

from fetalmlops.ingest.validation import Verdict

MEDIA_TYPE = "application/dicom+json"

# PS3.4 Annex B status codes used as STOW-RS FailureReason (0008,1197).
FAILURE_REASON = {
    Verdict.UNSUPPORTED: 0xC000,  # cannot understand
    Verdict.CORRUPT: 0xC000,
    Verdict.TOO_LARGE: 0xA700,  # out of resources
    Verdict.NOT_ALLOWED: 0x0122,  # SOP class not supported
}
PROCESSING_FAILURE = 0x0110


class StowRequestError(ValueError):
    """The request itself is not a STOW-RS request (wrong media type, unparsable body)."""


@dataclass(frozen=True)
class Part:
    data: bytes
    sop_class_uid: str
    sop_instance_uid: str


def parts(content_type: str, body: bytes) -> list[Part]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not isinstance(message, EmailMessage) or message.get_content_type() != "multipart/related":
        raise StowRequestError('expected Content-Type multipart/related; type="application/dicom"')
    declared = message.get_param("type", "application/dicom")
    if declared != "application/dicom":
        raise StowRequestError(f'only type="application/dicom" parts are accepted, not {declared}')
    found = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise StowRequestError("a part has no body")
        found.append(Part(payload, *_uids(payload)))
    if not found:
        raise StowRequestError("the multipart body has no parts")
    return found


def _uids(data: bytes) -> tuple[str, str]:
    """SOP class and instance UIDs, for the response (blank when the part is not DICOM)."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=[0x00080016, 0x00080018]
        )
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:  # the part will be refused by validation with its own reason
        return "", ""


def referenced(part: Part) -> dict[str, Any]:
    # No RetrieveURL: the raw zone holds PHI and offers no WADO retrieval.
    return {
        "00081150": {"vr": "UI", "Value": [part.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [part.sop_instance_uid]},
    }


def failed(part: Part, reason: int) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
    if part.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [part.sop_class_uid]}
    if part.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [part.sop_instance_uid]}
    return item


def response(
    stored: list[dict[str, Any]], failures: list[dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failures:
        body["00081198"] = {"vr": "SQ", "Value": failures}
    status = 200 if not failures else 202 if stored else 409
    return status, body
