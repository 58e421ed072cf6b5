"""The DICOM channel: a C-STORE SCP (and C-ECHO) for modalities and PACS (PS3.4 Annex B).

An association is rejected (A-ASSOCIATE-RJ, rejected-permanent, PS3.8 §9.3.4) unless the peer
calls this SCP by its own AE title and calls from one on the allow-list. Presentation contexts
are accepted for the allowed SOP classes in the transfer syntaxes below. Each C-STORE goes
through the same intake as every other channel; a refused instance gets the DIMSE failure
status of its cause (``statuses``), never a success. ``docs/conformance.md`` says all of this
to a PACS integrator; a test keeps it in step with these tables.

Each C-STORE is a server span, the root of the trace its image's events then carry (the span
names the operation and its DIMSE status, never the peer's AE titles or the dataset).
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from fetalmlops.common.bus import BusUnavailable
from fetalmlops.common.db import IngestChannel
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.statuses import DICOM_STATUS, PROCESSING_FAILURE, SUCCESS
from fetalmlops.ingest.validation import TRANSFER_SYNTAXES, Invalid

log = logging.getLogger(__name__)


class StoreSCP:
    def __init__(self, intake: Intake, host: str, port: int) -> None:
        limits = intake.limits
        self.intake = intake
        self.address = (host, port)
        self.ae = AE(ae_title=limits.scp_ae_title)
        self.ae.require_calling_aet = list(limits.calling_ae_titles)
        # pynetdicom answers any called AE title by default; a peer configured with the wrong
        # one would store here while believing it stores elsewhere.
        self.ae.require_called_aet = True
        self.ae.maximum_pdu_size = 0  # no limit on the PDU size the peer may send
        for sop_class in limits.sop_classes:
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.server: ThreadedAssociationServer | None = None

    def on_store(self, event: Any) -> int:
        with trace.get_tracer(__name__).start_as_current_span(
            "C-STORE", kind=SpanKind.SERVER, attributes={"rpc.system": "dicom"}
        ) as span:
            status = self.store(event)
            span.set_attribute("dicom.status", f"0x{status:04X}")
            if status != SUCCESS:
                span.set_status(Status(StatusCode.ERROR))
            return status

    def store(self, event: Any) -> int:
        try:
            self.intake.receive(event.encoded_dataset(include_meta=True), IngestChannel.C_STORE)
        except Invalid as exc:
            log.warning("C-STORE refused", extra={"verdict": exc.verdict.value})
            return DICOM_STATUS[exc.verdict]
        except BusUnavailable:
            return PROCESSING_FAILURE  # intake logged it; the peer may send it again
        except Exception:
            log.exception("C-STORE could not be stored")
            return PROCESSING_FAILURE
        return SUCCESS

    def start(self) -> None:
        self.server = self.ae.start_server(
            self.address, block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one the OS chose for port 0)."""
        if self.server is None:
            return self.address[1]
        return int(self.server.server_address[1])
