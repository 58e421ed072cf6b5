"""STOW-RS's pure parts: the Accept negotiation, the parts, the study check, the XML response."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pydicom
import pytest

from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.imaging.quiet import quiet_pydicom
from fetalmlops.ingest import native_model, stow
from fetalmlops.ingest.validation import Invalid, Verdict

NS = {"d": native_model.NAMESPACE}


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("", stow.JSON),
        ("*/*", stow.JSON),
        ("application/dicom+json", stow.JSON),
        ("application/json", stow.JSON),
        ("application/dicom+xml", stow.XML),
        ("application/dicom+xml, application/dicom+json;q=0.5", stow.XML),
        ("application/dicom+json;q=0.2, application/dicom+xml;q=0.9", stow.XML),
        ("application/dicom+xml, */*;q=0.1", stow.XML),
        ("application/dicom+json, application/dicom+xml", stow.JSON),  # a tie goes to JSON
    ],
)
def test_the_response_type_follows_the_accept_header(accept: str, chosen: str) -> None:
    assert stow.response_type(accept) == chosen


@pytest.mark.parametrize(
    "accept", ["image/png", "text/html", "application/dicom+xml;q=0", "application/dicom"]
)
def test_an_accept_header_without_either_encoding_is_not_acceptable(accept: str) -> None:
    with pytest.raises(stow.NotAcceptable):
        stow.response_type(accept)


def body(*parts: tuple[str | None, bytes]) -> bytes:
    out = b""
    for media_type, data in parts:
        header = b"" if media_type is None else f"Content-Type: {media_type}\r\n".encode()
        out += b"--b\r\n" + header + b"\r\n" + data + b"\r\n"
    return out + b"--b--\r\n"


def test_parts_carry_their_uids_and_their_own_media_type() -> None:
    dicom, png = sample_dicom(1), sample_picture(1, "PNG")
    ds = pydicom.dcmread(io.BytesIO(dicom))
    content_type = 'multipart/related; type="application/dicom"; boundary=b'
    first, second, third = stow.parts(
        content_type, body(("application/dicom", dicom), (None, png), ("image/png", png))
    )
    assert (first.sop_instance_uid, first.study_instance_uid) == (
        ds.SOPInstanceUID,
        ds.StudyInstanceUID,
    )
    assert first.parsed and not second.parsed
    assert (second.media_type, third.media_type) == ("application/dicom", "image/png")
    assert second.sop_instance_uid == "" and second.sop_class_uid == ""


def test_a_malformed_uid_is_never_repeated() -> None:
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(2)))
    buffer = io.BytesIO()
    with quiet_pydicom():  # pydicom warns of the malformed value, quoting it
        ds.SOPInstanceUID = "1.2.CANARY"
        ds.save_as(buffer)
    (part,) = stow.parts("multipart/related; boundary=b", body((None, buffer.getvalue())))
    assert part.parsed and part.sop_instance_uid == ""
    assert "CANARY" not in str(stow.failed(part, 0xC000))


def test_request_errors_never_quote_the_request() -> None:
    for content_type in ("text/CANARY", 'multipart/related; type="CANARY"; boundary=b'):
        with pytest.raises(stow.StowRequestError) as caught:
            stow.parts(content_type, body((None, b"x")))
        assert "CANARY" not in str(caught.value)


def test_only_dicom_parts_of_the_target_study_are_admissible() -> None:
    dicom = sample_dicom(3)
    study = str(pydicom.dcmread(io.BytesIO(dicom)).StudyInstanceUID)
    (part,) = stow.parts("multipart/related; boundary=b", body((None, dicom)))
    stow.admissible(part, None)
    stow.admissible(part, study)
    with pytest.raises(Invalid) as other:
        stow.admissible(part, "2.25.1")
    assert other.value.verdict is Verdict.OTHER_STUDY
    (png,) = stow.parts("multipart/related; boundary=b", body(("image/png", b"\x89PNG")))
    with pytest.raises(Invalid) as labelled:
        stow.admissible(png, None)
    assert labelled.value.verdict is Verdict.UNSUPPORTED


def test_the_status_says_all_some_none_or_retry() -> None:
    item = {"00081150": {"vr": "UI", "Value": ["1.2"]}}
    assert stow.response([item], [])[0] == 200
    assert stow.response([item], [item])[0] == 202
    assert stow.response([], [item])[0] == 409
    assert stow.response([item], [item], bus_unavailable=True)[0] == 503


def test_the_xml_response_is_the_native_dicom_model_of_the_json_one() -> None:
    referenced = {
        "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.6.1"]},
        "00081155": {"vr": "UI", "Value": ["2.25.7"]},
    }
    failed = {"00081197": {"vr": "US", "Value": [0xA901]}}
    _, payload = stow.response([referenced], [failed])
    root = ET.fromstring(stow.encode(payload, stow.XML))
    assert root.tag == f"{{{native_model.NAMESPACE}}}NativeDicomModel"
    tags = [a.get("tag") for a in root.findall("d:DicomAttribute", NS)]
    assert tags == ["00081198", "00081199"], "attributes in ascending tag order"
    reason = root.find("d:DicomAttribute[@tag='00081198']/d:Item/d:DicomAttribute", NS)
    assert reason is not None
    assert (reason.get("keyword"), reason.get("vr")) == ("FailureReason", "US")
    assert [v.text for v in reason.findall("d:Value", NS)] == [str(0xA901)]
    stored = root.find("d:DicomAttribute[@keyword='ReferencedSOPSequence']/d:Item", NS)
    assert stored is not None and stored.get("number") == "1"
    values = {
        a.get("keyword"): a.find("d:Value", NS).text  # type: ignore[union-attr]
        for a in stored.findall("d:DicomAttribute", NS)
    }
    assert values == {
        "ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.6.1",
        "ReferencedSOPInstanceUID": "2.25.7",
    }
