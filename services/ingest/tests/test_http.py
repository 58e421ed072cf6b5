"""REST upload and STOW-RS over HTTP, with bearer-token scopes."""

from __future__ import annotations

import io
import json

import pydicom
from fastapi.testclient import TestClient

from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture

from .conftest import WRITER


def stow_body(*instances: bytes, boundary: str = "fetal-boundary-0042") -> tuple[str, bytes]:
    """A STOW-RS request body (PS3.18 §8.6.1.2), CRLF-delimited, one DICOM file per part."""
    mark = boundary.encode()
    body = b"".join(
        b"--" + mark + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
        for data in instances
    )
    return (
        f'multipart/related; type="application/dicom"; boundary={boundary}',
        body + b"--" + mark + b"--\r\n",
    )


def test_upload_stores_then_recognises_a_duplicate(client: TestClient) -> None:
    files = {"file": ("scan.dcm", sample_dicom(6), "application/dicom")}
    first = client.post("/v1/images", files=files, headers=WRITER)
    again = client.post("/v1/images", files=files, headers=WRITER)
    assert first.status_code == 201 and first.json()["outcome"] == "stored"
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert first.json()["sha256"] == again.json()["sha256"]
    metrics = client.get("/metrics").text
    assert 'fetalmlops_ingest_images_total{channel="rest",outcome="duplicate"}' in metrics


def test_upload_png_and_jpeg(client: TestClient) -> None:
    for fmt in ("PNG", "JPEG"):
        response = client.post(
            "/v1/images", files={"file": ("x", sample_picture(7, fmt))}, headers=WRITER
        )
        assert response.status_code == 201, response.text
        assert response.json()["media_type"] == f"image/{fmt.lower()}"


def test_bad_uploads_get_a_reason_and_a_4xx(client: TestClient) -> None:
    cases = {
        b"just text": 415,
        sample_dicom(8)[:3000]: 422,
    }
    for data, status in cases.items():
        response = client.post("/v1/images", files={"file": ("x", data)}, headers=WRITER)
        assert response.status_code == status and response.json()["detail"]
    assert client.post("/v1/images", headers=WRITER).status_code == 422  # no file field
    odd_cohort = client.post(
        "/v1/images",
        files={"file": ("x", sample_picture(9))},
        data={"cohort": "site a/../b"},
        headers=WRITER,
    )
    assert odd_cohort.status_code == 422 and "cohort" in odd_cohort.text
    refused = client.get("/metrics").text
    assert 'fetalmlops_ingest_refused_total{channel="rest",verdict="unsupported"}' in refused


def test_tokens_and_scopes(client: TestClient) -> None:
    files = {"file": ("x", sample_picture(9, "PNG"))}
    missing = client.post("/v1/images", files=files)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post("/v1/images", files=files, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
    other_scope = client.post(
        "/v1/images", files=files, headers={"Authorization": "Bearer labeller"}
    )
    assert other_scope.status_code == 403
    assert client.get("/healthz").status_code == 200, "health needs no token"


def test_stow_rs_reports_each_instance(client: TestClient) -> None:
    good, other = sample_dicom(10), sample_dicom(11)
    bad = pydicom.dcmread(io.BytesIO(sample_dicom(12)))
    bad.Modality = "CT"
    buffer = io.BytesIO()
    bad.save_as(buffer, enforce_file_format=True)
    content_type, body = stow_body(good, other, buffer.getvalue())

    response = client.post(
        "/dicomweb/studies", content=body, headers={**WRITER, "Content-Type": content_type}
    )

    assert response.status_code == 202  # some stored, some failed
    assert response.headers["content-type"].startswith("application/dicom+json")
    payload = json.loads(response.content)
    stored = payload["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in stored] == [
        pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in (good, other)
    ]
    (failed,) = payload["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [0x0122]}
    assert failed["00081155"]["Value"] == [bad.SOPInstanceUID]


def test_stow_rs_status_when_all_or_none_are_stored(client: TestClient) -> None:
    content_type, body = stow_body(sample_dicom(13))
    assert (
        client.post(
            "/dicomweb/studies", content=body, headers={**WRITER, "Content-Type": content_type}
        ).status_code
        == 200
    )
    content_type, body = stow_body(b"garbage")
    none = client.post(
        "/dicomweb/studies", content=body, headers={**WRITER, "Content-Type": content_type}
    )
    assert none.status_code == 409
    assert none.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]


def test_stow_rs_refuses_a_non_multipart_request(client: TestClient) -> None:
    response = client.post(
        "/dicomweb/studies",
        content=sample_dicom(14),
        headers={**WRITER, "Content-Type": "application/dicom"},
    )
    assert response.status_code == 415 and "multipart/related" in response.json()["detail"]
