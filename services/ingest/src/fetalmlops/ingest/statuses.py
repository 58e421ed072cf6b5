"""What ingest answers for each cause of a refusal, on every protocol: one cause, one status.

The one place where verdicts become HTTP status codes, DIMSE statuses (C-STORE, PS3.4 Annex B
Table B.2-1 and the general statuses of PS3.7 Annex C) and STOW-RS Failure Reasons (PS3.18
Annex I, Table I.2-2, which takes its codes from PS3.4). A cause means the same on C-STORE and
on STOW-RS, so it gets the same code on both. ``docs/conformance.md`` lists these tables; a test
holds the two in step.
"""

from __future__ import annotations

from fastapi import status

from fetalmlops.ingest.validation import Verdict

# REST and STOW-RS request-level answers.
HTTP_STATUS = {
    Verdict.UNSUPPORTED: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    Verdict.TOO_LARGE: status.HTTP_413_CONTENT_TOO_LARGE,
    Verdict.SOP_CLASS_NOT_SUPPORTED: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Verdict.DOES_NOT_MATCH_SOP_CLASS: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Verdict.CORRUPT: status.HTTP_422_UNPROCESSABLE_CONTENT,
    Verdict.TRANSFER_SYNTAX_NOT_SUPPORTED: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    Verdict.OTHER_STUDY: status.HTTP_409_CONFLICT,
}

# The DICOM status of a refused instance: C-STORE response Status (0000,0900) and STOW-RS
# Failure Reason (0008,1197) alike.
DICOM_STATUS = {
    Verdict.UNSUPPORTED: 0xC000,  # Error: cannot understand (not a DICOM file at all)
    Verdict.CORRUPT: 0xC000,  # Error: cannot understand (unparseable, undecodable pixels)
    Verdict.TOO_LARGE: 0xA700,  # Refused: out of resources (over the configured limits)
    Verdict.SOP_CLASS_NOT_SUPPORTED: 0x0122,  # Refused: SOP class not supported
    Verdict.DOES_NOT_MATCH_SOP_CLASS: 0xA900,  # Error: data set does not match SOP class
    # PS3.18 I.2.2 "Referenced Transfer Syntax not supported", in C-STORE's Cxxx class; over
    # C-STORE a syntax outside the table is not negotiated in the first place.
    Verdict.TRANSFER_SYNTAX_NOT_SUPPORTED: 0xC122,
    # PS3.18 has no code of its own for a Study Instance UID other than the target's (its
    # Table 10.5.3-1 names the case under 409 only); I.2.2 leaves such codes to the conformance
    # statement. A901, in the A9xx class, as Azure's DICOM service answers it.
    Verdict.OTHER_STUDY: 0xA901,
}
SUCCESS = 0x0000
# An instance not stored for a reason of ours, not the sender's: the message bus unavailable,
# or an unexpected failure (PS3.7 C.5.1 "processing failure").
PROCESSING_FAILURE = 0x0110

# When the bus cannot announce an upload: the object may be stored, but it was not announced,
# and an upload sent again is announced once (intake). Retry-After gives the broker a restart.
BUS_UNAVAILABLE_HTTP = status.HTTP_503_SERVICE_UNAVAILABLE
RETRY_AFTER_S = 5
BUS_UNAVAILABLE_DETAIL = "the message bus is unavailable: send the same request again later"
