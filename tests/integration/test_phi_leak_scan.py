"""The PHI leak scan: known PHI planted, every channel ingest and the anonymizer write searched.

Phantom studies (PHI in the header, a nested sequence, a private block and the burned-in
banner), a picture whose patient id is declared at upload, a label, and a study the gate must
quarantine go through the real ingest and anonymizer processes on the real stack. Then every
channel outside the raw zone is searched for every planted value: the objects in every bucket
but `fetal-raw`, every event (key, value, headers) on this run's topics, every row of every
table, both services' logs (access logs included, after requests that carry a patient's name
and id in the query and a study's UID in the path) and metrics, and every span they exported
over OTLP.
"""

from __future__ import annotations

import io
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from PIL import Image as Picture

from fetalmlops.anonymizer.catalog import image_id as catalog_image_id
from fetalmlops.common.bus import KafkaBus
from fetalmlops.common.db import Base, Image, Label, create_engine_for, session_scope
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.phi import hits, planted_phi, sidecar
from fetalmlops.datasets.phantom.samples import sample_picture

from .collector import Collected, otlp_collector
from .ingest_service import LABELLER_TOKEN, RunningIngest, from_beginning, running_ingest
from .processes import ServiceProcess, get, wait_for

pytestmark = pytest.mark.stack
DECLARED_PATIENT = "P-LEAK-0042"
SECRET = "leak-scan-secret"
PICTURE_SIZE = (640, 480)


@dataclass
class Run:
    ingest: RunningIngest
    anonymizer: ServiceProcess
    settings: Settings  # the owner's view: every bucket and table
    spans: Collected
    phi: set[str]
    uploaded: list[str]  # raw sha256s: the studies, the region-less study, the picture

    @property
    def catalogued(self) -> set[str]:
        """Image ids of what the anonymizer must publish: all but the region-less study."""
        return {image_id(sha) for sha in self.uploaded if sha != self.quarantined}

    @property
    def quarantined(self) -> str:
        """The raw sha256 (the dead letter's key) of the study the anonymizer must refuse."""
        return self.uploaded[-2]


def regionless(study: bytes) -> bytes:
    """A study that says nothing of its imaging region: the anonymizer must quarantine it."""
    ds = pydicom.dcmread(io.BytesIO(study))
    del ds.SequenceOfUltrasoundRegions
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("leak")
    # Fresh bytes every run: the stack remembers earlier runs, and ingest stores an image once.
    seed = secrets.randbelow(10**6)
    generate(work / "phantom", plan(3, seed=seed), seed=seed, fmt=OutputFormat.DICOM)
    studies = sorted((work / "phantom" / "dicom").glob("*.dcm"))
    sidecars = [sidecar(p) for p in studies]
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(stack_settings(None).kafka_bootstrap_servers)
    bus.ensure_topics(list(topics.model_dump().values()), 3)
    bus.close()
    with otlp_collector() as (endpoint, spans):
        update = {"topics": topics, "otlp_endpoint": endpoint}
        own = stack_settings("anonymizer").model_copy(update=update)
        env = {
            **settings_env(own),
            "FETALMLOPS_ANONYMIZER_SECRET": SECRET,
            "FETALMLOPS_ANONYMIZER_MASKS": json.dumps({"640x480": [[40, 40, 600, 440]]}),
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        anonymizer = ServiceProcess("anonymizer", env, work / "anonymizer.log")
        ingest_settings = stack_settings("ingest").model_copy(update=update)
        with running_ingest(stack_settings(None), ingest_settings, work / "ingest.log") as ingest:
            anonymizer.start()
            try:
                uploaded = send(ingest, [p.read_bytes() for p in studies], seed)
                ask_by_patient([ingest.url, anonymizer.url], [p.read_bytes() for p in studies])
                yield Run(
                    ingest,
                    anonymizer,
                    stack_settings(None).model_copy(update={"topics": topics}),
                    spans,
                    planted_phi(sidecars) | {DECLARED_PATIENT},
                    uploaded,
                )
            finally:
                anonymizer.stop()


def image_id(raw_sha256: str) -> str:
    return catalog_image_id(SECRET.encode(), raw_sha256)


def send(ingest: RunningIngest, studies: list[bytes], seed: int) -> list[str]:
    """Uploads the studies, a region-less study and a labelled picture; their raw sha256s."""
    picture = io.BytesIO()
    Picture.open(io.BytesIO(sample_picture(seed))).resize(PICTURE_SIZE).save(picture, "PNG")
    labeller = {"Authorization": f"Bearer {LABELLER_TOKEN}"}
    with httpx.Client(base_url=ingest.url, headers=ingest.writer, timeout=60) as client:
        shas = [
            client.post("/v1/images", files={"file": ("scan.dcm", study)}).json()["sha256"]
            for study in [*studies, regionless(studies[0])]
        ]
        uploaded = client.post(
            "/v1/images",
            files={"file": (f"{DECLARED_PATIENT}.png", picture.getvalue())},
            data={"patient_id": DECLARED_PATIENT, "cohort": "leak-scan"},
        )
        uploaded.raise_for_status()
        label = {"raw_sha256": uploaded.json()["sha256"], "plane": "Fetal brain", "annotator": "a"}
        client.post("/v1/labels", json=label, headers=labeller).raise_for_status()
    return [*shas, uploaded.json()["sha256"]]


def ask_by_patient(urls: list[str], studies: list[bytes]) -> None:
    """What PACS integrations do with URLs: query by patient name and id, address a study by
    its UID. Whatever each service answers, its access log may name only the route."""
    for study in studies:
        ds = pydicom.dcmread(io.BytesIO(study), stop_before_pixels=True)
        query = {"PatientName": str(ds.PatientName), "PatientID": str(ds.PatientID)}
        for url in urls:
            with httpx.Client(base_url=url, timeout=30) as client:
                client.get("/dicomweb/studies", params=query)
                client.post(f"/dicomweb/studies/{ds.StudyInstanceUID}", content=b"")
                client.get(f"/v1/images/{ds.SOPInstanceUID}", params=query)


def access_routes(log: bytes) -> set[str]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith(b"{")]
    return {line["route"] for line in lines if line.get("logger") == "fetalmlops.access"}


def events(settings: Settings) -> list[bytes]:
    """Every record on this run's topics, from the beginning: key, value and headers.

    The two raw-zone topics are left out: PACS studies arrive on one with their PHI, and the
    other holds what ingest refused, as it came.
    """
    topics = settings.topics
    kept = [t for t in topics.model_dump().values()
            if t not in (topics.studies_incoming, topics.deadletter_raw)]  # fmt: skip
    return [
        b"\n".join(
            [r.key or b"", r.value or b"", *(k.encode() + b"=" + (v or b"") for k, v in r.headers)]
        )
        for r in from_beginning(settings, kept)
    ]


def objects(settings: Settings, image_ids: set[str]) -> list[bytes]:
    """Keys and bytes of this run's objects in every bucket but the raw zone (the stack keeps
    earlier runs' objects too; their keys are searched, their bytes were searched then)."""
    store = MinioStore(
        settings.minio_endpoint,
        settings.minio_access_key,
        settings.minio_secret_key.get_secret_value(),
    )
    found = []
    for bucket in settings.buckets.all():
        if bucket == settings.buckets.raw:
            continue
        for info in store.list(bucket):
            found.append(info.key.encode())
            if any(image_id in info.key for image_id in image_ids):
                found.append(store.get(bucket, info.key))
    return found


def rows(settings: Settings) -> list[bytes]:
    engine = create_engine_for(settings.database_url)
    try:
        with engine.connect() as connection:
            return [
                repr(tuple(row)).encode()
                for table in Base.metadata.sorted_tables
                for row in connection.execute(sa.select(table))
            ]
    finally:
        engine.dispose()


def test_planted_phi_reaches_no_channel(run: Run) -> None:
    engine = create_engine_for(run.settings.database_url)

    def settled() -> bool:
        with session_scope(engine) as session:
            catalogued = session.scalar(
                sa.select(sa.func.count()).select_from(Image).where(Image.id.in_(run.catalogued))
            )
            labels = session.scalar(
                sa.select(sa.func.count())
                .select_from(Label)
                .where(Label.image_id.in_(run.catalogued))
            )
        quarantined = any(run.quarantined.encode() in e for e in events(run.settings))
        return catalogued == len(run.catalogued) and labels == 1 and quarantined

    wait_for(settled, 120, "every image catalogued, the label joined, the study quarantined")
    wait_for(lambda: {"POST /v1/images", "POST /v1/labels"} <= run.spans.names(), 30, "spans")
    engine.dispose()

    channels = {
        "objects": objects(run.settings, {*run.catalogued, image_id(run.quarantined)}),
        "events": events(run.settings),
        "rows": rows(run.settings),
        "logs": [run.anonymizer.log.read_bytes(), run.ingest.log.read_bytes()],
        "metrics": [
            get(f"{url}/metrics")[1].encode() for url in (run.anonymizer.url, run.ingest.url)
        ],
        "spans": [text.encode() for text in run.spans.texts()],
    }

    assert all(channels.values()), {name: len(found) for name, found in channels.items()}
    # The access logs are among the logs searched, and they saw the requests by patient.
    assert {"/dicomweb/studies", "/v1/images"} <= access_routes(run.ingest.log.read_bytes())
    assert "unmatched" in access_routes(run.anonymizer.log.read_bytes())
    assert {name: hits(run.phi, found) for name, found in channels.items()} == {
        name: set() for name in channels
    }


def test_the_scan_finds_what_is_planted(run: Run) -> None:
    """The search itself works: the raw zone, where PHI belongs, is full of it."""
    store = MinioStore(
        run.settings.minio_endpoint,
        run.settings.minio_access_key,
        run.settings.minio_secret_key.get_secret_value(),
    )
    bucket = run.settings.buckets.raw
    raw = [store.get(bucket, f"sha256/{sha}") for sha in run.uploaded]
    raw += [store.get(bucket, f"context/{run.uploaded[-1]}.json")]
    found = hits(run.phi, raw)
    assert DECLARED_PATIENT in found and len(found) >= len(run.phi) // 2, sorted(run.phi - found)
