"""The C-STORE SCP in process, with pynetdicom as the peer: who may associate, what each cause
is answered (dcmtk's storescu and echoscu check the same over the wire in tests/integration)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    UltrasoundImageStorage,
    Verification,
)

from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.scp import StoreSCP


@pytest.fixture
def scp(intake: Intake) -> Iterator[StoreSCP]:
    server = StoreSCP(intake, "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def peer(calling: str = "FETAL_PACS") -> AE:
    ae = AE(ae_title=calling)
    for context in (UltrasoundImageStorage, CTImageStorage, Verification):
        ae.add_requested_context(context)
    return ae


def test_the_called_ae_title_must_be_the_scps_own(scp: StoreSCP) -> None:
    wrong = peer().associate("127.0.0.1", scp.port, ae_title="WRONGAE")
    assert wrong.is_rejected
    assert peer("UNKNOWN").associate("127.0.0.1", scp.port, ae_title="FETALMLOPS").is_rejected
    right = peer().associate("127.0.0.1", scp.port, ae_title="FETALMLOPS")
    assert right.is_established
    accepted = {c.abstract_syntax for c in right.accepted_contexts}
    right.release()
    assert CTImageStorage not in accepted, "only the allowed SOP classes are negotiated"
    assert {UltrasoundImageStorage, Verification} <= accepted


def store(scp: StoreSCP, ds: pydicom.Dataset) -> int:
    association = peer().associate("127.0.0.1", scp.port, ae_title="FETALMLOPS")
    assert association.is_established
    try:
        return int(association.send_c_store(ds).Status)
    finally:
        association.release()


def test_a_us_instance_whose_modality_is_not_us_does_not_match_its_sop_class(
    scp: StoreSCP,
) -> None:
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(30)))
    ds.Modality = "CT"
    assert store(scp, ds) == 0xA900


def test_without_the_bus_a_c_store_is_a_processing_failure_and_the_resend_succeeds(
    scp: StoreSCP,
) -> None:
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(31)))
    healthy, down = scp.intake.bus, EmbeddedBus()
    down.close()
    scp.intake.bus = down
    assert store(scp, ds) == 0x0110
    scp.intake.bus = healthy
    assert store(scp, ds) == 0x0000


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans finished during the test (the process-wide provider, made here if none is)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays, exporting nothing more


def test_each_c_store_is_a_server_span_that_roots_its_images_trace(
    scp: StoreSCP, exported: InMemorySpanExporter
) -> None:
    ds = pydicom.dcmread(io.BytesIO(sample_dicom(32)))
    assert store(scp, ds) == 0x0000
    refused = pydicom.dcmread(io.BytesIO(sample_dicom(33)))
    refused.Modality = "CT"
    assert store(scp, refused) == 0xA900

    spans = exported.get_finished_spans()
    stored, failed = [s for s in spans if s.name == "C-STORE"]
    assert stored.kind is SpanKind.SERVER and stored.parent is None
    assert stored.attributes == {"rpc.system": "dicom", "dicom.status": "0x0000"}
    published = [s for s in spans if s.name.endswith(" publish")]
    assert published and all(s.context.trace_id == stored.context.trace_id for s in published)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes == {"rpc.system": "dicom", "dicom.status": "0xA900"}
