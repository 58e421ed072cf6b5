"""Ingest's DICOM channels as PACS software meets them: dcmtk's echoscu and storescu over
C-ECHO / C-STORE, and dicomweb-client's DICOMwebClient over STOW-RS, against a real ingest
process on the real stack (with topics of its own, so the announcements counted are ours).
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient

from fetalmlops.common.settings import Settings
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture

from .ingest_service import (
    CALLING_AE,
    AnnouncementWatch,
    RunningIngest,
    private_topics,
    running_ingest,
)

pytestmark = pytest.mark.stack
DIMSE_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-f]{4})")


@pytest.fixture(scope="module")
def ingest(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningIngest]:
    topics = private_topics(stack_settings(None).kafka_bootstrap_servers)
    own = stack_settings("ingest").model_copy(update={"topics": topics})
    log = tmp_path_factory.mktemp("ingest-peers") / "ingest.log"
    with running_ingest(stack_settings(None), own, log) as service:
        yield service


def fresh() -> pydicom.Dataset:
    """A phantom study nobody sent before (the stack keeps what earlier runs stored)."""
    return pydicom.dcmread(io.BytesIO(sample_dicom(secrets.randbelow(10**9))))


def written(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def echo(ingest: RunningIngest, calling: str, called: str) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(ingest.scp_port))


def store(ingest: RunningIngest, path: Path) -> tuple[int, str]:
    """storescu's exit code and what it printed (with -d, the DIMSE status of the response)."""
    done = dcmtk(
        "storescu", "-d", "-aet", CALLING_AE, "-aec", "FETALMLOPS",
        "127.0.0.1", str(ingest.scp_port), str(path),
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def status_of(output: str) -> int:
    (status,) = DIMSE_STATUS.findall(output)
    return int(status, 16)


@pytest.mark.needs("echoscu")
def test_echoscu_must_call_the_scp_by_its_own_ae_title(ingest: RunningIngest) -> None:
    wrong_called = echo(ingest, CALLING_AE, "WRONGAE")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    wrong_calling = echo(ingest, "STRANGER", "FETALMLOPS")
    assert wrong_calling.returncode != 0
    assert "Calling AE Title Not Recognized" in wrong_calling.stdout + wrong_calling.stderr
    assert echo(ingest, CALLING_AE, "FETALMLOPS").returncode == 0


@pytest.mark.needs("storescu")
def test_storescu_gets_one_status_per_cause(ingest: RunningIngest, tmp_path: Path) -> None:
    good, wrong_modality, undecodable, ct = fresh(), fresh(), fresh(), fresh()
    wrong_modality.Modality = "CT"
    undecodable.PixelData = undecodable.PixelData[:1000]
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    watch = AnnouncementWatch(ingest.settings)

    stored = store(ingest, written(good, tmp_path / "good.dcm"))
    again = store(ingest, tmp_path / "good.dcm")
    mismatch = store(ingest, written(wrong_modality, tmp_path / "modality.dcm"))
    corrupt = store(ingest, written(undecodable, tmp_path / "corrupt.dcm"))
    unsupported = store(ingest, written(ct, tmp_path / "ct.dcm"))

    assert (stored[0], status_of(stored[1])) == (0, 0x0000), stored[1][-2000:]
    assert status_of(again[1]) == 0x0000, "a resend is acknowledged"
    assert mismatch[0] != 0 and status_of(mismatch[1]) == 0xA900
    assert corrupt[0] != 0 and status_of(corrupt[1]) == 0xC000
    # A SOP class outside the allow-list is not even negotiated: storescu cannot send it.
    assert unsupported[0] != 0 and "presentation context" in unsupported[1].lower()
    (event,) = watch.announced(1)
    assert event.raw.size > 0, "only the good instance, once"


def client(ingest: RunningIngest, accept: str | None = None) -> DICOMwebClient:
    headers = dict(ingest.writer)
    if accept is not None:
        headers["Accept"] = accept
    return DICOMwebClient(url=f"{ingest.url}/dicomweb", headers=headers)


def test_stow_rs_stores_reports_and_refuses_per_instance(ingest: RunningIngest) -> None:
    good = fresh()
    watch = AnnouncementWatch(ingest.settings)
    stored = client(ingest).store_instances([good])
    assert [i.ReferencedSOPInstanceUID for i in stored.ReferencedSOPSequence] == [
        good.SOPInstanceUID
    ]
    # DICOMwebClient encodes datasets; a sender that mislabels a PNG as a DICOM part sends its
    # bytes as they are, which the client's multipart poster does.
    png = sample_picture(secrets.randbelow(10**9), "PNG")
    with pytest.raises(requests.HTTPError) as refused:
        client(ingest)._http_post_multipart_application_dicom(
            f"{ingest.url}/dicomweb/studies", [png]
        )
    response = refused.value.response
    assert response.status_code == 409
    (failed,) = pydicom.Dataset.from_json(response.json()).FailedSOPSequence
    assert failed.FailureReason == 0xC000 and "ReferencedSOPInstanceUID" not in failed
    (event,) = watch.announced(1)
    assert event.media_type == "application/dicom", "the PNG was neither stored nor announced"


def test_stow_rs_to_a_study_refuses_another_studys_instances(ingest: RunningIngest) -> None:
    mine, other = fresh(), fresh()
    study = str(mine.StudyInstanceUID)
    watch = AnnouncementWatch(ingest.settings)

    answer = client(ingest).store_instances([mine, other], study_instance_uid=study)

    (stored,) = answer.ReferencedSOPSequence
    (failed,) = answer.FailedSOPSequence
    assert stored.ReferencedSOPInstanceUID == mine.SOPInstanceUID
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == (other.SOPInstanceUID, 0xA901)
    assert len(watch.announced(1)) == 1
    # The route's Study UID is the sender's own; ingest's log names the route, never the UID.
    log = ingest.log.read_text()
    assert "/dicomweb/studies/{study}" in log
    assert not {study, str(other.StudyInstanceUID), str(mine.SOPInstanceUID)} & set(
        re.findall(r"[0-9.]{10,}", log)
    )


def test_stow_rs_answers_in_xml_when_asked_and_406_when_it_cannot(ingest: RunningIngest) -> None:
    good, xml = fresh(), client(ingest, "application/dicom+xml")
    media_types: list[str] = []
    xml._session.hooks["response"].append(
        lambda response, *args, **kwargs: media_types.append(response.headers["content-type"])
    )
    answer = xml.store_instances([good])
    assert media_types == ["application/dicom+xml"]
    (stored,) = answer.ReferencedSOPSequence  # parsed by the client from the Native DICOM Model
    assert stored.ReferencedSOPInstanceUID == good.SOPInstanceUID
    with pytest.raises(requests.HTTPError) as refused:
        client(ingest, "image/png").store_instances([fresh()])
    assert refused.value.response.status_code == 406
