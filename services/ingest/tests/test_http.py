"""REST upload and STOW-RS over HTTP, with bearer-token scopes."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from fastapi.testclient import TestClient

from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.service import create_app
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.intake import Intake

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
    # A US instance whose Modality is not US does not match its SOP class: A900, as on C-STORE.
    assert failed["00081197"] == {"vr": "US", "Value": [0xA900]}
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


@pytest.fixture
def app_intake(intake: Intake) -> tuple[TestClient, Intake]:
    """The routes over an intake the test holds, so it can take the bus away and back."""
    app = create_app("ingest under test", {})
    add_routes(app, intake)
    return TestClient(app), intake


def stored_objects(intake: Intake) -> int:
    return len(list(intake.store.list(intake.settings.buckets.raw)))


def announced(intake: Intake) -> list[str]:
    assert isinstance(intake.bus, EmbeddedBus)
    subscription = intake.bus.subscribe([intake.settings.topics.images_received], "t-watch")
    keys = [r.key or "" for r in subscription.poll(0.1)]
    subscription.close()
    return keys


def test_a_png_sent_as_dicom_fails_and_is_not_stored(app_intake: tuple[TestClient, Intake]) -> None:
    client, intake = app_intake
    content_type, body = stow_body(sample_picture(15, "PNG"))
    response = client.post(
        "/dicomweb/studies", content=body, headers={**WRITER, "Content-Type": content_type}
    )
    assert response.status_code == 409
    (failed,) = response.json()["00081198"]["Value"]
    assert failed == {"00081197": {"vr": "US", "Value": [0xC000]}}, "no UIDs: it has none"
    assert stored_objects(intake) == 0 and announced(intake) == []


def test_stow_rs_to_one_study_refuses_the_instances_of_another(
    app_intake: tuple[TestClient, Intake],
) -> None:
    client, intake = app_intake
    mine, other = sample_dicom(16), sample_dicom(17)
    study = str(pydicom.dcmread(io.BytesIO(mine)).StudyInstanceUID)
    assert study != pydicom.dcmread(io.BytesIO(other)).StudyInstanceUID
    content_type, body = stow_body(mine, other)
    headers = {**WRITER, "Content-Type": content_type}

    response = client.post(f"/dicomweb/studies/{study}", content=body, headers=headers)

    assert response.status_code == 202
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA901]
    assert failed["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID]
    assert stored_objects(intake) == 1 and len(announced(intake)) == 1
    not_a_uid = client.post("/dicomweb/studies/1.2.x", content=body, headers=headers)
    assert not_a_uid.status_code == 400 and "1.2.x" not in not_a_uid.text
    assert stored_objects(intake) == 1


def test_stow_rs_answers_in_xml_or_not_at_all(app_intake: tuple[TestClient, Intake]) -> None:
    client, intake = app_intake
    content_type, body = stow_body(sample_dicom(18))
    headers = {**WRITER, "Content-Type": content_type}
    refused = client.post(
        "/dicomweb/studies", content=body, headers={**headers, "Accept": "image/png"}
    )
    assert refused.status_code == 406 and stored_objects(intake) == 0, "refused before storing"
    xml = client.post(
        "/dicomweb/studies", content=body, headers={**headers, "Accept": "application/dicom+xml"}
    )
    assert xml.status_code == 200
    assert xml.headers["content-type"].startswith("application/dicom+xml")
    assert b"NativeDicomModel" in xml.content and b"ReferencedSOPSequence" in xml.content


def test_without_the_bus_every_upload_is_a_503_and_the_retry_announces_once(
    app_intake: tuple[TestClient, Intake],
) -> None:
    client, intake = app_intake
    healthy, down = intake.bus, EmbeddedBus()
    down.close()
    intake.bus = down
    data = sample_dicom(19)
    content_type, body = stow_body(sample_dicom(20), sample_dicom(21))
    stow_headers = {**WRITER, "Content-Type": content_type}
    label = {"raw_sha256": "ab" * 32, "plane": "Fetal brain", "annotator": "a"}

    rest = client.post("/v1/images", files={"file": ("x", data)}, headers=WRITER)
    stow_rs = client.post("/dicomweb/studies", content=body, headers=stow_headers)
    labels = client.post("/v1/labels", json=label, headers={"Authorization": "Bearer labeller"})

    for response in (rest, stow_rs, labels):
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    reasons = [f["00081197"]["Value"] for f in stow_rs.json()["00081198"]["Value"]]
    assert reasons == [[0x0110], [0x0110]], "the second part is not tried once the bus is down"
    assert 'fetalmlops_ingest_unannounced_total{channel="rest"}' in client.get("/metrics").text

    intake.bus = healthy
    again = client.post("/v1/images", files={"file": ("x", data)}, headers=WRITER)
    assert again.status_code == 201
    assert client.post("/v1/images", files={"file": ("x", data)}, headers=WRITER).status_code == 200
    assert announced(intake) == [again.json()["sha256"]]
