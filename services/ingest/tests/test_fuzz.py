"""Property-based abuse of REST, STOW-RS and C-STORE: never a 5xx or a crash, nothing half-stored.

Inputs are phantom files broken in the ways real traffic breaks them (truncated, bytes flipped,
junk appended, absurd dimensions, wrong modality, random header values) and non-images. Whatever
a channel refuses must leave no object, no record and no announcement behind.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import IngestRecord, session_scope
from fetalmlops.common.service import create_app
from fetalmlops.common.store import ObjectNotFound
from fetalmlops.datasets.phantom.samples import sample_dicom, sample_picture
from fetalmlops.ingest.http import add_routes
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.scp import StoreSCP

from .conftest import WRITER

DICOM = sample_dicom(2)
PNG = sample_picture(2, "PNG")
JPEG = sample_picture(2, "JPEG")
SEEDS = {"dicom": DICOM, "png": PNG, "jpeg": JPEG}
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def broken_files(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    mutation = draw(st.sampled_from(["truncate", "flip", "append", "header", "random"]))
    if mutation == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if mutation == "flip":
        for _ in range(draw(st.integers(1, 16))):
            data[draw(st.integers(0, min(len(data), 4096) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if mutation == "append":
        return bytes(data) + draw(st.binary(min_size=1, max_size=512))
    if mutation == "header":
        return bytes(data[:132]) + draw(st.binary(max_size=2048))
    return draw(st.binary(max_size=4096))


@st.composite
def odd_datasets(draw: st.DrawFn) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(DICOM))
    field = draw(
        st.sampled_from(
            [
                "Rows",
                "Columns",
                "Modality",
                "BitsAllocated",
                "PixelData",
                "NumberOfFrames",
                "Photometric",
            ]
        )
    )
    if field in ("Rows", "Columns"):
        setattr(ds, field, draw(st.integers(0, 65535)))
    elif field == "Modality":
        ds.Modality = draw(st.sampled_from(["CT", "MR", "", "OT", "XA"]))
    elif field == "BitsAllocated":
        ds.BitsAllocated = draw(st.sampled_from([1, 12, 16, 32]))
    elif field == "PixelData":
        ds.PixelData = ds.PixelData[: draw(st.integers(0, len(ds.PixelData) - 1))]
    elif field == "NumberOfFrames":
        ds.NumberOfFrames = draw(st.integers(0, 100000))
    else:
        ds.PhotometricInterpretation = draw(
            st.sampled_from(["RGB", "YBR_FULL", "PALETTE COLOR", "X"])
        )
    return ds


def nothing_stored_for(intake: Intake, data: bytes) -> bool:
    try:
        intake.store.stat(intake.settings.buckets.raw, f"sha256/{hashlib.sha256(data).hexdigest()}")
    except ObjectNotFound:
        return True
    return False


def totals(intake: Intake) -> tuple[int, int, int]:
    """(objects, records, announcements) in the raw zone so far."""
    assert isinstance(intake.bus, EmbeddedBus)
    with session_scope(intake.engine) as session:
        records = len(session.scalars(select(IngestRecord)).all())
    subscription = intake.bus.subscribe([intake.settings.topics.images_received], "fuzz-audit")
    announced = len(subscription.poll(0.05))
    subscription.close()
    return len(list(intake.store.list(intake.settings.buckets.raw))), records, announced


@pytest.fixture
def app_intake(intake: Intake) -> tuple[TestClient, Intake]:
    app = create_app("fuzzed ingest", {})
    add_routes(app, intake)
    return TestClient(app), intake


@FUZZ
@given(data=broken_files())
def test_rest_upload_never_fails_on_bad_input(
    app_intake: tuple[TestClient, Intake], data: bytes
) -> None:
    client, intake = app_intake
    before = totals(intake)
    response = client.post("/v1/images", files={"file": ("x", data)}, headers=WRITER)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["detail"]
        assert nothing_stored_for(intake, data) and totals(intake) == before


@FUZZ
@given(parts=st.lists(broken_files(), min_size=1, max_size=3), junk=st.binary(max_size=64))
def test_stow_rs_never_fails_on_bad_input(
    app_intake: tuple[TestClient, Intake], parts: list[bytes], junk: bytes
) -> None:
    client, intake = app_intake
    body = b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    body += junk + b"--b--\r\n"
    headers = {**WRITER, "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    before = totals(intake)
    response = client.post("/dicomweb/studies", content=body, headers=headers)
    assert response.status_code < 500, response.text
    stored = (
        len(response.json().get("00081199", {}).get("Value", []))
        if response.status_code in (200, 202)
        else 0
    )
    after = totals(intake)
    # Only instances listed as stored may add objects, records and announcements.
    assert all(now - then <= stored for now, then in zip(after, before, strict=True))


@pytest.fixture
def scp(intake: Intake) -> Iterator[StoreSCP]:
    server = StoreSCP(intake, "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ds=odd_datasets())
def test_c_store_refuses_odd_datasets_and_keeps_serving(scp: StoreSCP, ds: pydicom.Dataset) -> None:
    ae = AE(ae_title="FETAL_PACS")
    ae.add_requested_context(UltrasoundImageStorage)
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", scp.port, ae_title="FETALMLOPS")
    assert association.is_established
    before = totals(scp.intake)
    try:
        status = association.send_c_store(ds)
        code = int(status.Status) if "Status" in status else None
        if code is not None and code != 0:
            assert totals(scp.intake) == before, "a refused instance leaves nothing behind"
        assert association.send_c_echo().Status == 0x0000, "the SCP keeps serving"
    finally:
        association.release()
