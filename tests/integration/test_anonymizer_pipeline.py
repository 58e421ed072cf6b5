"""Ingest and anonymizer as real processes on the real stack: one trace, no PHI, nothing lost."""

from __future__ import annotations

import hashlib
import io
import secrets
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from sqlalchemy import func, select

from fetalmlops.anonymizer.catalog import image_id as catalog_image_id
from fetalmlops.common.bus import KafkaBus
from fetalmlops.common.bus.consume import DLQ_ERROR
from fetalmlops.common.db import Image, create_engine_for, session_scope
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.v1 import images_pb2

from .ingest_service import RunningIngest, TopicWatch, running_ingest
from .processes import ServiceProcess, wait_for

pytestmark = pytest.mark.stack
SECRET = "pipeline-test-secret"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Pipeline:
    ingest: RunningIngest
    anonymizer: ServiceProcess
    own: Settings  # the anonymizer's view of the stack
    owner: Settings

    def image_id(self, data: bytes) -> str:
        return catalog_image_id(SECRET.encode(), hashlib.sha256(data).hexdigest())

    def catalogued(self, ids: set[str]) -> int:
        engine = create_engine_for(self.owner.database_url)
        try:
            with session_scope(engine) as session:
                return int(
                    session.scalar(select(func.count()).select_from(Image).where(Image.id.in_(ids)))
                    or 0
                )
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def pipeline(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("pipeline")
    # Topics of this run only: the stack keeps every earlier run's events, a backlog that the
    # anonymizer's consumer group would otherwise work through first.
    run = uuid.uuid4().hex[:8]
    topics = Topics(
        images_received=f"test.{run}.images.received",
        images_anonymized=f"test.{run}.images.anonymized",
        deadletter=f"test.{run}.deadletter",
    )
    own = stack_settings("anonymizer").model_copy(update={"topics": topics})
    bus = KafkaBus(own.kafka_bootstrap_servers)
    bus.ensure_topics([topics.images_received, topics.images_anonymized, topics.deadletter], 3)
    bus.close()
    ingest_settings = stack_settings("ingest").model_copy(update={"topics": topics})
    env = {**settings_env(own), "FETALMLOPS_ANONYMIZER_SECRET": SECRET}
    anonymizer = ServiceProcess("anonymizer", env, logs / "anonymizer.log")
    with running_ingest(stack_settings(None), ingest_settings, logs / "ingest.log") as ingest:
        anonymizer.start()
        try:
            yield Pipeline(ingest, anonymizer, own, stack_settings(None))
        finally:
            anonymizer.stop()


def upload(pipeline: Pipeline, data: bytes, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(
        base_url=pipeline.ingest.url, headers=pipeline.ingest.writer, timeout=60
    ) as client:
        client.post(
            "/v1/images", files={"file": ("x.dcm", data)}, headers=headers or {}
        ).raise_for_status()


def test_one_trace_from_upload_to_anonymized_image_without_phi(pipeline: Pipeline) -> None:
    data = sample_dicom(secrets.randbelow(10**9))
    source = pydicom.dcmread(io.BytesIO(data))
    watch = TopicWatch(pipeline.own, pipeline.own.topics.images_anonymized)
    upload(pipeline, data, {"traceparent": f"00-{CALLER_TRACE}-b7ad6b7169203331-01"})

    image_id = pipeline.image_id(data)
    records = [r for r in watch.collect(1) if r.key == image_id.encode()]
    (record,) = records
    traceparent = dict(record.headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == CALLER_TRACE, (
        "the anonymizer's output continues the caller's trace"
    )

    event = images_pb2.ImageAnonymized.FromString(record.value)
    store = MinioStore(
        pipeline.own.minio_endpoint,
        pipeline.own.minio_access_key,
        pipeline.own.minio_secret_key.get_secret_value(),
    )
    output = store.get(event.dicom.bucket, event.dicom.key)
    phi = [
        str(source.PatientName),
        source.PatientID,
        source.AccessionNumber,
        source.StudyInstanceUID,
        source.SOPInstanceUID,
    ]
    channels = {
        "event": record.value.decode("latin-1"),
        "object": output.decode("latin-1"),
        "log": pipeline.anonymizer.log.read_text(),
    }
    assert {name: [v for v in phi if v in text] for name, text in channels.items()} == {
        name: [] for name in channels
    }
    assert pydicom.dcmread(io.BytesIO(output)).PatientIdentityRemoved == "YES"


def test_sigkill_in_the_middle_of_200_images_loses_none(pipeline: Pipeline) -> None:
    base = secrets.randbelow(10**9)
    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(lambda i: sample_dicom(base + i, profile="portable"), range(200)))
    ids = {pipeline.image_id(data) for data in images}
    watch = TopicWatch(pipeline.own, pipeline.own.topics.images_anonymized)
    letters = TopicWatch(pipeline.own, pipeline.own.topics.deadletter)

    def catalogued_at_least(count: int) -> bool:
        # A dead letter means an image will never be catalogued: say why now, not at timeout.
        dead = letters.fresh()
        assert not dead, [dict(r.headers).get(DLQ_ERROR) for r in dead]
        return pipeline.catalogued(ids) >= count

    # Killed while images still arrive: the anonymizer keeps up with the uploads.
    with ThreadPoolExecutor(4) as pool:
        uploads = [pool.submit(upload, pipeline, data) for data in images]
        wait_for(lambda: catalogued_at_least(40), 180, "40 images anonymized")
        assert pipeline.anonymizer.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = pipeline.catalogued(ids)
        for done in uploads:
            done.result()
    assert killed_at < 200, "killed in the middle"
    pipeline.anonymizer.start()
    wait_for(lambda: catalogued_at_least(200), 300, "all 200 images anonymized")
    letters.consumer.close()

    published = Counter(
        r.key.decode()
        for r in watch.collect(200, quiet_s=5, timeout_s=120)
        if r.key.decode() in ids
    )
    assert set(published) == ids, "every image published"
    # At most the message in flight when the process died is published a second time.
    assert sum(published.values()) - len(ids) <= 2, published.most_common(3)
    store = MinioStore(
        pipeline.own.minio_endpoint,
        pipeline.own.minio_access_key,
        pipeline.own.minio_secret_key.get_secret_value(),
    )
    stored = {
        o.key.split("/")[1].removesuffix(".dcm")
        for o in store.list(pipeline.own.buckets.anonymized, "images/")
    }
    assert ids <= stored
