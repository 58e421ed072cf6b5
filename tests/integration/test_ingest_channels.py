"""Phantom studies over each of ingest's four channels, against the real stack.

Each image must land once in `fetal-raw` and be announced once on `fetal.images.received`; the
same image pushed again is neither stored nor announced again; bad input gets the channel's own
refusal and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import text

from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.bus.consume import DLQ_ERROR
from fetalmlops.common.db import create_engine_for
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import MinioStore, ObjectNotFound
from fetalmlops.datasets.phantom.dataset import generate, plan
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.datasets.readers import read_dataset
from fetalmlops.v1 import common_pb2, images_pb2, labels_pb2, studies_pb2

from .ingest_service import (
    CALLING_AE,
    FETALMLOPS,
    IMPORTER_TOKEN,
    LABELLER_TOKEN,
    AnnouncementWatch,
    RunningIngest,
    TopicWatch,
    counts,
    running_ingest,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def ingest(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningIngest]:
    own = stack_settings("ingest")
    log = tmp_path_factory.mktemp("ingest") / "ingest.log"
    with running_ingest(stack_settings(None), own, log) as service:
        yield service


@pytest.fixture
def raw(ingest: RunningIngest) -> MinioStore:
    s = ingest.settings
    return MinioStore(s.minio_endpoint, s.minio_access_key, s.minio_secret_key.get_secret_value())


def fresh_dicom() -> bytes:
    """A phantom study nobody sent before: a new seed each run, since the stack keeps its data."""
    return sample_dicom(secrets.randbelow(10**9))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_once(raw: MinioStore, bucket: str, data: bytes) -> bool:
    return raw.get(bucket, f"sha256/{sha(data)}") == data


def absent(raw: MinioStore, bucket: str, data: bytes) -> bool:
    try:
        raw.stat(bucket, f"sha256/{sha(data)}")
    except ObjectNotFound:
        return True
    return False


def test_rest_upload_arrives_once(ingest: RunningIngest, raw: MinioStore) -> None:
    data = fresh_dicom()
    watch = AnnouncementWatch(ingest.settings)
    with httpx.Client(base_url=ingest.url, headers=ingest.writer) as client:
        first = client.post("/v1/images", files={"file": ("a.dcm", data)})
        again = client.post("/v1/images", files={"file": ("a.dcm", data)})
    assert (first.status_code, again.status_code) == (201, 200)
    assert stored_once(raw, ingest.settings.buckets.raw, data)
    assert counts(watch.announced(1)) == {sha(data): 1}


def test_rest_refuses_bad_input_and_missing_tokens(ingest: RunningIngest, raw: MinioStore) -> None:
    truncated = fresh_dicom()[:4000]
    with httpx.Client(base_url=ingest.url) as client:
        assert client.post("/v1/images", files={"file": ("x", truncated)}).status_code == 401
        wrong = {"Authorization": f"Bearer {LABELLER_TOKEN}"}
        assert (
            client.post("/v1/images", files={"file": ("x", truncated)}, headers=wrong).status_code
            == 403
        )
        refused = client.post("/v1/images", files={"file": ("x", truncated)}, headers=ingest.writer)
    assert refused.status_code == 422 and refused.json()["verdict"] == "corrupt"
    assert absent(raw, ingest.settings.buckets.raw, truncated)


def test_stow_rs_stores_a_study_once(ingest: RunningIngest, raw: MinioStore) -> None:
    instances = [fresh_dicom(), fresh_dicom()]
    boundary = "stow-test"
    body = b"".join(
        b"--stow-test\r\nContent-Type: application/dicom\r\n\r\n" + d + b"\r\n" for d in instances
    )
    body += b"--stow-test--\r\n"
    headers = {
        **ingest.writer,
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    watch = AnnouncementWatch(ingest.settings)
    with httpx.Client(base_url=ingest.url) as client:
        first = client.post("/dicomweb/studies", content=body, headers=headers)
        again = client.post("/dicomweb/studies", content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.headers["content-type"].startswith("application/dicom+json")
    assert len(first.json()["00081199"]["Value"]) == 2
    assert all(stored_once(raw, ingest.settings.buckets.raw, d) for d in instances)
    assert counts(watch.announced(2)) == {sha(d): 1 for d in instances}


def c_store(ingest: RunningIngest, data: bytes, calling: str = CALLING_AE) -> int | None:
    """Send one instance from a pynetdicom SCU; the DIMSE status, or None if refused."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(UltrasoundImageStorage)
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", ingest.scp_port, ae_title="FETALMLOPS")
    if not association.is_established:
        return None
    try:
        status = association.send_c_store(pydicom.dcmread(io.BytesIO(data)))
        return int(status.Status)
    finally:
        association.release()


def test_c_store_from_a_dicom_peer(ingest: RunningIngest, raw: MinioStore) -> None:
    data = fresh_dicom()
    watch = AnnouncementWatch(ingest.settings)
    assert c_store(ingest, data) == 0x0000
    assert c_store(ingest, data) == 0x0000  # a resend is acknowledged, not stored again
    # The SCP stores the dataset as received over the network (its own file meta), so the
    # object is found through the announcement and recognised by its SOP Instance UID.
    (event,) = watch.announced(1)
    stored = pydicom.dcmread(io.BytesIO(raw.get(event.raw.bucket, event.raw.key)))
    assert stored.SOPInstanceUID == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    assert event.channel == images_pb2.INGEST_CHANNEL_C_STORE


def test_c_store_refusals(ingest: RunningIngest, raw: MinioStore) -> None:
    data = fresh_dicom()
    assert c_store(ingest, data, calling="UNKNOWN_AE") is None, "AE title not on the allow-list"
    ct = pydicom.dcmread(io.BytesIO(fresh_dicom()))
    ct.Modality = "CT"
    buffer = io.BytesIO()
    ct.save_as(buffer, enforce_file_format=True)
    assert c_store(ingest, buffer.getvalue()) == 0xA900
    assert absent(raw, ingest.settings.buckets.raw, data)
    assert absent(raw, ingest.settings.buckets.raw, buffer.getvalue())


def test_c_echo(ingest: RunningIngest) -> None:
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", ingest.scp_port, ae_title="FETALMLOPS")
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    association.release()


def study(*instances: studies_pb2.StudyIncoming.Instance) -> studies_pb2.StudyIncoming:
    return studies_pb2.StudyIncoming(
        study_instance_uid="2.25.1", source="test-pacs", instances=list(instances)
    )


def test_kafka_study_with_inline_and_landing_instances(
    ingest: RunningIngest, raw: MinioStore
) -> None:
    inline, staged = fresh_dicom(), fresh_dicom()
    bucket = ingest.settings.buckets.raw
    landing_key = f"landing/{sha(staged)}.dcm"
    raw.put(bucket, landing_key, staged)
    message = study(
        studies_pb2.StudyIncoming.Instance(sop_instance_uid="1", inline=inline),
        studies_pb2.StudyIncoming.Instance(
            sop_instance_uid="2", landing=common_pb2.ObjectRef(bucket=bucket, key=landing_key)
        ),
    )
    watch = AnnouncementWatch(ingest.settings)
    bus = KafkaBus(ingest.settings.kafka_bootstrap_servers, client_id="test-pacs")
    topic = ingest.settings.topics.studies_incoming
    publish_event(bus, topic, f"study-{sha(inline)[:8]}", message, "test-pacs")
    publish_event(bus, topic, f"study-{sha(inline)[:8]}", message, "test-pacs")  # pushed twice
    bus.close()
    keys = {sha(inline), sha(staged)}
    assert counts(watch.announced(2)) == dict.fromkeys(keys, 1)
    assert stored_once(raw, bucket, inline) and stored_once(raw, bucket, staged)


def test_kafka_poison_study_is_dead_lettered_whole(ingest: RunningIngest, raw: MinioStore) -> None:
    good = fresh_dicom()
    message = study(
        studies_pb2.StudyIncoming.Instance(sop_instance_uid="1", inline=good),
        studies_pb2.StudyIncoming.Instance(sop_instance_uid="2", inline=b"not dicom at all"),
    )
    settings = ingest.settings
    bus = KafkaBus(settings.kafka_bootstrap_servers, client_id="test-pacs")
    key = f"poison-{sha(good)[:12]}"
    publish_event(bus, settings.topics.studies_incoming, key, message, "test-pacs")
    watcher = bus.subscribe([settings.topics.deadletter_raw], f"dlq-watch-{key}")
    letter = None
    for _ in range(120):
        letter = next((r for r in watcher.poll(0.5) if r.key == key), None)
        if letter:
            break
    watcher.close()
    bus.close()
    assert letter is not None, Path(ingest.log).read_text()[-2000:]
    assert (
        letter.header(DLQ_ERROR) == b"Rejected: instance 2: not a DICOM Part 10 file, PNG or JPEG"
    )
    assert absent(raw, settings.buckets.raw, good), "nothing of a rejected study is stored"


def test_dataset_import_is_resumable_and_arrives_once(
    ingest: RunningIngest, tmp_path: Path
) -> None:
    dataset = tmp_path / "phantom"
    seed = secrets.randbelow(10**9)
    generate(dataset, plan(2, seed=seed, profiles=("portable",)), seed=seed)
    total = len(read_dataset(dataset))
    announcements, labels = (
        AnnouncementWatch(ingest.settings),
        TopicWatch(ingest.settings, ingest.settings.topics.labels),
    )
    command = [str(FETALMLOPS), "dataset", "import", str(dataset), "--url", ingest.url]
    command += ["--token", IMPORTER_TOKEN, "--journal-dir", str(tmp_path / "journal")]

    interrupted = subprocess.run(
        [*command, "--limit", "3"], capture_output=True, text=True, timeout=120
    )
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert interrupted.returncode == 0, interrupted.stderr
    assert f"3 imported, 0 already done, 0 refused, {total - 3} left" in interrupted.stdout
    assert resumed.returncode == 0 and f"{total - 3} imported, 3 already done" in resumed.stdout
    events = announcements.announced(total)
    assert len(events) == total and set(counts(events).values()) == {1}
    assert {e.channel for e in events} == {images_pb2.INGEST_CHANNEL_IMPORT}
    attached = [labels_pb2.LabelAttached.FromString(r.value) for r in labels.collect(total)]
    assert sorted(a.raw_sha256 for a in attached) == sorted(counts(events))


def test_dataset_import_with_a_bad_token_stops_at_once(
    ingest: RunningIngest, tmp_path: Path
) -> None:
    dataset = tmp_path / "phantom"
    generate(dataset, plan(1, seed=1), seed=1)
    command = [
        str(FETALMLOPS),
        "dataset",
        "import",
        str(dataset),
        "--url",
        ingest.url,
        "--token",
        "nope",
    ]
    result = subprocess.run(
        [*command, "--journal-dir", str(tmp_path / "j")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "refused the token" in result.stderr


def test_no_phi_leaves_the_raw_zone(
    ingest: RunningIngest, stack_settings: Callable[[str | None], Settings]
) -> None:
    """Plant PHI, push it in, search everything ingest writes outside fetal-raw for it."""
    data = fresh_dicom()
    ds = pydicom.dcmread(io.BytesIO(data))
    phi = [
        str(ds.PatientName), ds.PatientName.family_name, ds.PatientID, ds.PatientBirthDate,
        ds.AccessionNumber, ds.InstitutionName, str(ds.ReferringPhysicianName), ds.StationName,
        ds.StudyInstanceUID, ds.SOPInstanceUID,
    ]  # fmt: skip
    watch = AnnouncementWatch(ingest.settings)
    with httpx.Client(base_url=ingest.url, headers=ingest.writer) as client:
        sha256 = client.post("/v1/images", files={"file": (f"{ds.PatientName}.dcm", data)}).json()[
            "sha256"
        ]
        metrics = client.get("/metrics").text
    assert c_store(ingest, data) == 0x0000
    events = watch.collect(2)
    engine = create_engine_for(stack_settings(None).database_url)
    with engine.connect() as connection:
        rows = [str(row) for row in connection.execute(text("SELECT * FROM ingest_records"))]
    engine.dispose()
    channels = {
        "events": b"".join(r.value for r in events).decode("latin-1"),
        "log": ingest.log.read_text(),
        "metrics": metrics,
        "ingest_records": "\n".join(rows),
    }
    assert sha256 in channels["ingest_records"], "the search covers this image's row"
    leaks = {name: [v for v in phi if v and v in content] for name, content in channels.items()}
    assert leaks == {name: [] for name in channels}
