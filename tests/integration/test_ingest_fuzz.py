"""A fuzz run against a real ingest process: malformed uploads, a planted canary, every channel.

`fetalmlops run ingest` runs on the real stack (topics of its own), with bearer tokens, at
DEBUG, exporting its spans over OTLP to the collector of `collector.py`. Hypothesis builds at
least 2,000 requests to its HTTP routes: REST uploads (`/v1/images`, every form field), STOW-RS
(`/dicomweb/studies` and `/dicomweb/studies/{study}`: parts, boundaries, media types, Accept),
labels (`/v1/labels`) and paths it does not route, each with the canary of `canary.py` where a
client can put it: in the files (DICOM header, PNG chunk, JPEG and GIF comments, junk), file
names, form fields, JSON, header values, path segments and the query string.

What must hold:

* no answer is a 5xx: a client's mistake is a 4xx with a reason;
* no answer, no line of the log and no exported span holds the canary in any form;
* nothing is half-stored: every record this run created was announced, exactly once;
* the process's peak RSS, through the fuzz and an abuse phase of heavy requests sent 16 at
  a time, stays within a bound derived from its limits (see `RSS_ALLOWANCE`).
"""

from __future__ import annotations

import io
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pydicom
import pytest
from hypothesis import strategies as st
from pydicom.uid import generate_uid
from sqlalchemy import select

from fetalmlops.common.db import IngestRecord, create_engine_for, session_scope
from fetalmlops.common.settings import Settings
from fetalmlops.datasets.phantom.samples import sample_picture
from fetalmlops.ingest.http import STOW_BODY_FACTOR

from .canary import (
    CANARY,
    CANARY_NUMBER,
    MIB,
    Seen,
    canary_dicoms,
    canary_pictures,
    encoded,
    fuzz_then_abuse,
    leaking,
    mutated,
    not_images,
    png_header,
)
from .collector import Collected, otlp_collector
from .ingest_service import (
    IMPORTER_TOKEN,
    LABELLER_TOKEN,
    WRITER_TOKEN,
    RunningIngest,
    from_beginning,
    private_topics,
    running_ingest,
)
from .processes import wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

EXAMPLES = 2200
MAX_BYTES = 4 * MIB
# Above the RSS ingest settles at once it has answered one request of each kind: 16 bodies in
# flight at once, each at most a STOW-RS body (16 MiB) held about three times over while it is
# read and split into parts (the body, the parser's copy, the parts); two pictures of the most
# pixels the limits admit (40 M pixels, about 160 MB as 32-bit RGBA while decoded); and 250 MB
# for the allocator's arenas.
RSS_ALLOWANCE = 16 * 3 * MAX_BYTES * STOW_BODY_FACTOR + 2 * 160 * MIB + 250 * MIB
AUTHORIZATIONS = [f"Bearer {WRITER_TOKEN}"] * 6 + [
    f"Bearer {IMPORTER_TOKEN}",
    f"Bearer {LABELLER_TOKEN}",
    f"Bearer {CANARY}",
    CANARY,
    f"Basic {CANARY}",
]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    chunked: bool = False


@dataclass(frozen=True)
class Fuzzed:
    ingest: RunningIngest
    spans: Collected
    owner: Settings


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, ...]:
    """The canary's files, each new to the stack (which keeps what earlier runs stored), so
    that the images among them are stored, not recognised as duplicates."""
    study = [fresh_instance(data) for data in canary_dicoms(tmp_path_factory.mktemp("study"))]
    picture = sample_picture(secrets.randbelow(10**9), "PNG")
    return tuple([*study, *canary_pictures(picture), *not_images()])


def fresh_instance(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return encoded(ds)


@pytest.fixture(scope="module")
def fuzzed(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzzed]:
    owner = stack_settings(None)
    topics = private_topics(owner.kafka_bootstrap_servers)
    own = stack_settings("ingest").model_copy(update={"topics": topics})
    log = tmp_path_factory.mktemp("ingest-fuzz") / "ingest.log"
    with otlp_collector() as (endpoint, spans):
        env = {
            "FETALMLOPS_LOG_LEVEL": "DEBUG",
            "FETALMLOPS_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "FETALMLOPS_INGEST_MAX_BYTES": str(MAX_BYTES),
        }
        with running_ingest(owner, own, log, env) as ingest:
            yield Fuzzed(ingest, spans, owner.model_copy(update={"topics": topics}))


# --- what a request may be made of ---------------------------------------------------------


def canary_or(*values: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from([*values, CANARY, str(CANARY_NUMBER)])


@st.composite
def rest_upload(draw: st.DrawFn, files: tuple[bytes, ...]) -> Request:
    name = draw(canary_or("scan.dcm", "image.png", ""))
    media = draw(canary_or("application/dicom", "image/png", "application/octet-stream"))
    form = {
        "channel": draw(canary_or("rest", "import", "rest")),
        "cohort": draw(canary_or("", "site-a", "site-a", CANARY * 8)),
        "patient_id": draw(canary_or("", "", CANARY * 8)),
    }
    form = {k: v for k, v in form.items() if draw(st.booleans())}
    field_name = draw(st.sampled_from(["file", "file", "file", CANARY]))
    upload = {field_name: (name, draw(mutated(files)), media)}
    return Request("POST", "/v1/images", {}, files=upload, data=form)


@st.composite
def stow(draw: st.DrawFn, files: tuple[bytes, ...]) -> Request:
    boundary = draw(st.sampled_from(["fuzz-boundary", "fuzz-boundary", CANARY]))
    parts = b""
    for _ in range(draw(st.sampled_from([1, 1, 2, 3, 0]))):
        kind = draw(canary_or("application/dicom", "application/dicom", "image/png", None))
        head = b"" if kind is None else f"Content-Type: {kind}\r\n".encode()
        parts += f"--{boundary}\r\n".encode() + head + b"\r\n" + draw(mutated(files)) + b"\r\n"
    tail = draw(st.sampled_from([f"--{boundary}--\r\n", "", CANARY, f"--{boundary}"]))
    content_type = draw(st.sampled_from([
        f'multipart/related; type="application/dicom"; boundary={boundary}',
        f'multipart/related; type="application/dicom"; boundary={boundary}',
        f"multipart/related; boundary={boundary}",
        f'multipart/related; type="{CANARY}"; boundary={boundary}',
        "multipart/related", "application/dicom", CANARY, "",
    ]))  # fmt: skip
    headers = {"Content-Type": content_type} if content_type else {}
    accept = draw(st.sampled_from([
        None, None, "application/dicom+json", "application/dicom+xml", CANARY,
        "application/json;q=0", f"application/dicom+xml;q={CANARY}",
    ]))  # fmt: skip
    if accept is not None:
        headers["Accept"] = accept
    study = draw(st.sampled_from([
        None, None, "1.2.826.0.1.3680043.8.498.1", str(CANARY_NUMBER), CANARY, f"1.2.{CANARY}",
        f"0{CANARY_NUMBER}",
    ]))  # fmt: skip
    path = "/dicomweb/studies" if study is None else f"/dicomweb/studies/{study}"
    return Request("POST", path, headers, parts + tail.encode())


@st.composite
def label(draw: st.DrawFn) -> Request:
    body: dict[str, Any] = {
        "raw_sha256": draw(canary_or("0" * 64, None, "0" * 63 + "g")),
        "image_id": draw(canary_or(None, None, "img-1")),
        "plane": draw(canary_or("fetal_brain", "Fetal brain", CANARY_NUMBER, None)),
        "brain_plane": draw(canary_or(None, "trans-thalamic")),
        "annotator": draw(canary_or("annotator-7", f"{CANARY} Jane", "")),
    }
    body = {k: v for k, v in body.items() if draw(st.integers(0, 5))}
    content = json.dumps(draw(st.sampled_from([body, body, [body], CANARY, {CANARY: body}])))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", CANARY, "text/plain"]))}
    return Request("POST", "/v1/labels", headers, content.encode())


@st.composite
def elsewhere(draw: st.DrawFn) -> Request:
    path = draw(st.sampled_from([
        f"/dicomweb/studies?PatientName={CANARY}&PatientID={CANARY_NUMBER}",
        f"/dicomweb/studies/{CANARY}/series", f"/v1/images/{CANARY}", f"/{CANARY}",
        "/v1/images", "/dicomweb/studies", f"/metrics/{CANARY}", f"/docs/{CANARY}",
    ]))  # fmt: skip
    method = draw(st.sampled_from(["GET", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    content = draw(st.sampled_from([None, CANARY.encode()]))
    return Request(method, path, {}, content)


@st.composite
def fuzz_requests(draw: st.DrawFn, files: tuple[bytes, ...]) -> Request:
    kind = draw(st.sampled_from(["rest", "rest", "stow", "stow", "stow", "label", "other"]))
    if kind == "rest":
        request = draw(rest_upload(files))
    elif kind == "stow":
        request = draw(stow(files))
    elif kind == "label":
        request = draw(label())
    else:
        request = draw(elsewhere())
    headers = dict(request.headers)
    headers["Authorization"] = draw(st.sampled_from(AUTHORIZATIONS))
    for name, value in draw(st.lists(st.sampled_from([
        ("x-request-id", CANARY), ("User-Agent", CANARY), ("traceparent", CANARY),
        ("Content-Encoding", CANARY), ("Referer", f"http://pacs/?patient={CANARY}"),
        (CANARY, CANARY),
    ]), max_size=3)):  # fmt: skip
        headers[name] = value
    path = request.path
    if "?" not in path and draw(st.integers(0, 3)) == 0:
        path += f"?patient={CANARY}&mrn={CANARY_NUMBER}"
    chunked = request.content is not None and draw(st.integers(0, 9)) == 0
    return Request(
        request.method, path, headers, request.content, request.files, request.data, chunked
    )


# --- sending and searching ------------------------------------------------------------------


def send(http: httpx.Client, request: Request) -> httpx.Response:
    content: Any = request.content
    if request.chunked and content is not None:
        content = iter([content[: len(content) // 2], content[len(content) // 2 :]])
    return http.request(
        request.method,
        request.path,
        headers=request.headers,
        content=content,
        files=request.files,
        data=request.data,
    )


def multipart_related(*parts: bytes) -> tuple[dict[str, str], bytes]:
    head = b"--b\r\nContent-Type: application/dicom\r\n\r\n"
    body = b"".join(head + part + b"\r\n" for part in parts) + b"--b--\r\n"
    return {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}, body


def abuse(files: tuple[bytes, ...]) -> list[Request]:
    """Heavy requests, sent 16 at a time: bodies at and past the limits, pixel bombs."""
    auth = {"Authorization": f"Bearer {WRITER_TOKEN}"}
    study = files[0]
    near_limit = study * (MAX_BYTES // len(study))  # one DICOM's bytes repeated: corrupt
    headers, body = multipart_related(*[near_limit] * STOW_BODY_FACTOR)
    stow_full = Request("POST", "/dicomweb/studies", auth | headers, body[: MAX_BYTES * 4 - 1])
    stow_over = Request("POST", "/dicomweb/studies", auth | headers, body + near_limit)
    rest_over = Request("POST", "/v1/images", auth, files={"file": ("x", near_limit + study)})
    bomb = png_header(9000, 9000)
    rest_bomb = Request("POST", "/v1/images", auth, files={"file": ("x", bomb)})
    return [stow_full] * 16 + [stow_over] * 16 + [rest_over] * 16 + [rest_bomb] * 16


def records_since(owner: Settings, started: datetime) -> set[str]:
    engine = create_engine_for(owner.database_url)
    try:
        with session_scope(engine) as session:
            rows = session.scalars(select(IngestRecord).where(IngestRecord.received_at >= started))
            unannounced = [r.sha256 for r in rows if r.announced_at is None]
            assert unannounced == [], "stored but never announced"
            rows = session.scalars(select(IngestRecord).where(IngestRecord.received_at >= started))
            return {r.sha256 for r in rows}
    finally:
        engine.dispose()


def test_malformed_requests_get_4xx_and_no_channel_repeats_them(
    fuzzed: Fuzzed, files: tuple[bytes, ...]
) -> None:
    ingest, seen = fuzzed.ingest, Seen()
    started_at = datetime.now(UTC)

    def exchange(http: httpx.Client, request: Request) -> None:
        response = send(http, request)
        answer = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        seen.record(f"{request.method} {request.path[:80]}", response, f"{answer}\n{response.text}")

    with httpx.Client(base_url=ingest.url, timeout=60) as http:
        for request in abuse(files)[::16]:  # one of each kind: every path warmed up
            exchange(http, request)
    pressure = fuzz_then_abuse(
        ingest.url, ingest.pid, fuzz_requests(files), abuse(files), exchange, EXAMPLES
    )
    print("\n" + pressure.summary(seen, "ingest", RSS_ALLOWANCE))
    assert seen.sent >= EXAMPLES
    assert seen.errors == []
    assert seen.leaks == []
    # Every kind of answer was met: stored, refused for each reason, and routed nowhere.
    assert {201, 401, 403, 404, 405, 413, 415, 422} <= set(seen.statuses)
    assert pressure.peak <= pressure.baseline + RSS_ALLOWANCE

    stored = records_since(fuzzed.owner, started_at)
    announced = Counter(
        r.key.decode() for r in from_beginning(fuzzed.owner, [fuzzed.owner.topics.images_received])
    )
    assert stored and announced == dict.fromkeys(stored, 1), "each stored image announced once"

    log = logged_after_a_probe(ingest)
    assert "DEBUG" in log and '"logger": "fetalmlops.access"' in log
    assert leaking(log.splitlines()) == []
    wait_for(lambda: len(fuzzed.spans.texts()) > seen.sent / 2, 30, "the spans exported")
    spans = fuzzed.spans.texts()
    print(f"{len(spans)} spans exported, {len(log.splitlines())} log lines")
    assert leaking(spans) == []


def logged_after_a_probe(ingest: RunningIngest) -> str:
    """The log once every request before it is in it (the probe's line is written last; a
    path no route takes is logged, where the health probes are kept quiet)."""
    unrouted = '"route": "unmatched"'
    before = ingest.log.read_text(errors="replace").count(unrouted)
    httpx.get(f"{ingest.url}/log-probe")
    wait_for(lambda: ingest.log.read_text(errors="replace").count(unrouted) > before, 10, "probe")
    return ingest.log.read_bytes().decode("utf-8", errors="replace")
