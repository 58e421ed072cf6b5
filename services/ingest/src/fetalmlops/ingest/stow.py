"""DICOMweb STOW-RS (PS3.18 §10.5): multipart/related in, a Store Instances Response out.

Each part is stored on its own; the response (PS3.18 Annex I) lists stored instances in
ReferencedSOPSequence and refused ones in FailedSOPSequence with a FailureReason, and the status
code says whether all (200), some (202) or none (409) were stored — or, when the message bus
was unavailable, that the client should send the request again (503). The response is DICOM
JSON, or the Native DICOM Model XML when the client accepts only that (PS3.18 §8.7.3).

The UIDs in a response are the sender's own, read from its instances; only well-formed UIDs
are repeated, so a malformed value never comes back. Nothing here logs a UID.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import pydicom

from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.ingest import native_model
from fetalmlops.ingest.validation import DICOM, Invalid, Verdict

JSON = "application/dicom+json"
XML = native_model.MEDIA_TYPE
# PS3.5 §9.1: digits and dots, no leading zero in a component, at most 64 characters.
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_TAGS = {
    "sop_class_uid": 0x00080016,
    "sop_instance_uid": 0x00080018,
    "study_instance_uid": 0x0020000D,
}
# Media ranges an Accept header may name for each response encoding, most specific first.
ACCEPTED = {
    JSON: (JSON, "application/json", "application/*", "*/*"),
    XML: (XML,),
}


class StowRequestError(ValueError):
    """The request itself is not a STOW-RS request (wrong media type, unparsable body).

    Its message never quotes the request: a header value may be anything."""


class NotAcceptable(ValueError):
    """The client accepts neither response encoding."""


def is_uid(value: str) -> bool:
    return len(value) <= 64 and UID.match(value) is not None


@dataclass(frozen=True)
class Part:
    data: bytes
    media_type: str
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    parsed: bool = False  # the part's header parsed as DICOM


def response_type(accept: str) -> str:
    """The response encoding for an Accept header (RFC 9110 §12.5.1): JSON unless the client
    prefers XML; ``NotAcceptable`` when it takes neither."""
    quality: dict[str, float] = {}
    for media_range in filter(None, (r.strip() for r in accept.split(","))):
        kind, *params = (p.strip() for p in media_range.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for encoding, ranges in ACCEPTED.items():
            if kind.lower() in ranges:
                quality[encoding] = max(quality.get(encoding, 0.0), q)
    if not accept.strip():
        return JSON
    best = max(quality.items(), key=lambda pair: (pair[1], pair[0] == JSON), default=None)
    if best is None or best[1] <= 0:
        raise NotAcceptable(f"the response is available as {JSON} or {XML}")
    return best[0]


def parts(content_type: str, body: bytes) -> list[Part]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not isinstance(message, EmailMessage) or message.get_content_type() != "multipart/related":
        raise StowRequestError('expected Content-Type multipart/related; type="application/dicom"')
    if message.get_param("type", DICOM) != DICOM:
        raise StowRequestError('only type="application/dicom" parts are accepted')
    found = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise StowRequestError("a part has no body")
        # A part without its own Content-Type has the one the request declared (RFC 2387).
        media_type = part.get_content_type() if part.get("Content-Type") else DICOM
        found.append(_read(payload, media_type))
    if not found:
        raise StowRequestError("the multipart body has no parts")
    return found


def _read(data: bytes, media_type: str) -> Part:
    """The part with its UIDs, for the response and the study check (blank when it is not
    DICOM or a UID is malformed; validation refuses the part with its own reason)."""
    try:
        with quiet_pydicom():  # pydicom's warnings quote the values they cannot read
            ds = pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True, specific_tags=list(UID_TAGS.values())
            )
            uids = {name: str(ds[tag].value) if tag in ds else "" for name, tag in UID_TAGS.items()}
    except Exception:
        return Part(data, media_type)
    uids = {name: value if is_uid(value) else "" for name, value in uids.items()}
    return Part(data, media_type, parsed=True, **uids)


def admissible(part: Part, study_instance_uid: str | None) -> None:
    """Refuses a part before validation: not DICOM by its own label, or of another study than
    the request's target (PS3.18 §10.5.1: a Study resource stores that study's instances)."""
    if part.media_type != DICOM:
        raise Invalid(Verdict.UNSUPPORTED, "a part is not application/dicom")
    # A part that does not parse is left to validation, which says why.
    if part.parsed and study_instance_uid not in (None, part.study_instance_uid):
        raise Invalid(Verdict.OTHER_STUDY, "the instance belongs to another study")


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
    stored: list[dict[str, Any]], failures: list[dict[str, Any]], bus_unavailable: bool = False
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failures:
        body["00081198"] = {"vr": "SQ", "Value": failures}
    if bus_unavailable:
        # Sending the whole request again is safe: what was stored is recognised, not re-announced.
        return 503, body
    status = 200 if not failures else 202 if stored else 409
    return status, body


def encode(body: dict[str, Any], media_type: str) -> bytes:
    if media_type == XML:
        return native_model.to_xml(body)
    return json.dumps(body).encode()
