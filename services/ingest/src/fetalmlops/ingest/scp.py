"""The DICOM channel: a C-STORE SCP (and C-ECHO) for modalities and PACS (PS3.4 Annex B).

Only calling AE titles on the allow-list may associate (others get A-ASSOCIATE-RJ). Each
C-STORE goes through the same intake as every other channel; a refused instance gets a DIMSE
failure status, never a success.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from fetalmlops.common.db import IngestChannel
from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.validation import Invalid, Verdict

log = logging.getLogger(__name__)

SUCCESS = 0x0000
# PS3.4 Table B.2-1 failure statuses.
DIMSE_STATUS = {
    Verdict.UNSUPPORTED: 0xC000,  # Error: cannot understand
    Verdict.CORRUPT: 0xC000,
    Verdict.TOO_LARGE: 0xA700,  # Refused: out of resources
    Verdict.NOT_ALLOWED: 0xA900,  # Error: data set does not match SOP class
}
PROCESSING_FAILURE = 0x0110
# Explicit/implicit little endian plus the compressed syntaxes ultrasound devices send.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
]


class StoreSCP:
    def __init__(self, intake: Intake, host: str, port: int) -> None:
        limits = intake.limits
        self.intake = intake
        self.address = (host, port)
        self.ae = AE(ae_title=limits.scp_ae_title)
        self.ae.require_calling_aet = list(limits.calling_ae_titles)
        self.ae.maximum_pdu_size = 0  # no limit on the PDU size the peer may send
        for sop_class in (UltrasoundImageStorage, UltrasoundMultiFrameImageStorage):
            self.ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        self.ae.add_supported_context(Verification)
        self.server: ThreadedAssociationServer | None = None

    def on_store(self, event: Any) -> int:
        try:
            self.intake.receive(event.encoded_dataset(include_meta=True), IngestChannel.C_STORE)
        except Invalid as exc:
            log.warning("C-STORE refused", extra={"verdict": exc.verdict.value})
            return DIMSE_STATUS[exc.verdict]
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
