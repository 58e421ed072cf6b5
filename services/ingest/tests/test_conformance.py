"""docs/conformance.md says what the code does: its tables are read back and compared with the
code's own tables (SOP classes, transfer syntaxes, statuses per cause, STOW-RS status codes)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.uid import UID
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from fetalmlops.ingest.intake import Intake
from fetalmlops.ingest.scp import StoreSCP
from fetalmlops.ingest.settings import IngestSettings
from fetalmlops.ingest.statuses import (
    BUS_UNAVAILABLE_HTTP,
    DICOM_STATUS,
    HTTP_STATUS,
    PROCESSING_FAILURE,
)
from fetalmlops.ingest.validation import TRANSFER_SYNTAXES, Verdict

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "conformance.md"
Table = list[dict[str, str]]


def tables(markdown: str) -> list[Table]:
    """Every pipe table of the document, as rows keyed by the header's cells (backticks off)."""
    found: list[Table] = []
    lines = markdown.splitlines()
    for n, line in enumerate(lines[:-1]):
        if not (line.startswith("|") and lines[n + 1].startswith("|---")):
            continue
        header = cells(line)
        rows: Table = []
        for row in lines[n + 2 :]:
            if not row.startswith("|"):
                break
            rows.append(dict(zip(header, cells(row), strict=True)))
        found.append(rows)
    return found


def cells(line: str) -> list[str]:
    return [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]


def table_with(column: str) -> Table:
    matching = [t for t in tables(DOCUMENT.read_text()) if t and column in t[0]]
    assert len(matching) == 1, f"one table with a {column!r} column"
    return matching[0]


def dicom_code(text: str) -> int | None:
    return None if text == "—" else int(text, 16)


def test_the_sop_classes_are_the_ones_the_scp_negotiates(intake: Intake) -> None:
    documented = {row["SOP Class UID"]: row["Name"] for row in table_with("SOP Class UID")}
    negotiated = {c.abstract_syntax for c in StoreSCP(intake, "127.0.0.1", 0).ae.supported_contexts}
    assert set(documented) == negotiated == {*IngestSettings().sop_classes, Verification}
    for uid, name in documented.items():
        assert UID(uid).name.removesuffix(" SOP Class") == name


def test_the_transfer_syntaxes_are_the_ones_every_channel_takes(intake: Intake) -> None:
    rows = table_with("Transfer Syntax UID")
    assert [row["Transfer Syntax UID"] for row in rows] == list(TRANSFER_SYNTAXES)
    assert all(UID(row["Transfer Syntax UID"]).name == row["Name"] for row in rows)
    for context in StoreSCP(intake, "127.0.0.1", 0).ae.supported_contexts:
        if context.abstract_syntax != Verification:
            assert context.transfer_syntax == list(TRANSFER_SYNTAXES), "in this preference"


def test_each_cause_has_the_documented_status_on_every_channel() -> None:
    rows = {row["Cause (verdict)"]: row for row in table_with("Cause (verdict)")}
    assert set(rows) == {v.value for v in Verdict}, "every cause is documented"
    for verdict in Verdict:
        row = rows[verdict.value]
        assert int(row["REST HTTP status"]) == HTTP_STATUS[verdict]
        assert dicom_code(row["STOW-RS FailureReason"]) == DICOM_STATUS[verdict]
        # A cause either never arises on C-STORE (no target study there) or has the same code.
        assert dicom_code(row["C-STORE Status"]) in (DICOM_STATUS[verdict], None)
        if dicom_code(row["C-STORE Status"]) is None:
            assert verdict is Verdict.OTHER_STUDY


def test_failures_of_ours_are_documented_with_their_codes() -> None:
    (ours,) = [t for t in tables(DOCUMENT.read_text()) if t and "Cause" in t[0] and "REST" in t[0]]
    bus, other = ours
    code = f"0x{PROCESSING_FAILURE:04X}"
    assert bus["C-STORE Status"] == code and bus["STOW-RS"].startswith(code)
    assert f"HTTP {BUS_UNAVAILABLE_HTTP} with Retry-After" in bus["STOW-RS"]
    assert bus["REST"] == f"{BUS_UNAVAILABLE_HTTP} with Retry-After"
    assert other["C-STORE Status"] == other["STOW-RS"] == code


def test_the_stow_rs_status_codes_are_the_routes_own(client: TestClient) -> None:
    documented = {
        int(code) for row in table_with("HTTP status") for code in row["HTTP status"].split(" / ")
    }
    paths = client.get("/openapi.json").json()["paths"]
    declared = {
        int(code)
        for path in ("/dicomweb/studies", "/dicomweb/studies/{study}")
        for code in paths[path]["post"]["responses"]
    }
    # FastAPI declares 422 for any route with a parameter; a path parameter is never missing.
    assert documented == declared - {422}


def test_the_ae_title_defaults_are_the_documented_ones() -> None:
    text, defaults = " ".join(DOCUMENT.read_text().split()), IngestSettings()
    assert f"(default `{defaults.scp_ae_title}`)" in text
    assert f"default `{json.dumps(defaults.calling_ae_titles)}`" in text
    assert f"default `{json.dumps(defaults.modalities)}`" in text
