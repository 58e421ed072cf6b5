"""One source instance sent again and again reaches the catalog once, on the real stack.

A fresh phantom study goes to ingest's C-STORE SCP with dcmtk's storescu in implicit VR little
endian (-xi), then explicit VR little endian (-xe), then with explicit VR big endian proposed
first (-xb; the SCP accepts no big endian, so storescu falls back to a little endian syntax it
offered too), and once more over DICOMweb STOW-RS with dicomweb-client: several raw copies,
several sha256s, one announcement each on fetal.images.received. The real ingest and
anonymizer processes must make one catalog image of them, publish exactly one
fetal.images.anonymized event for it, dead-letter nothing and leave no object in
fetal-anonymized for any copy but the one image; a label sent for the last copy's sha256 (what
ingest told that sender) must end up on the one image.

Topics are this run's own; the database and buckets are shared, so every assertion is about
this run's image, copies and keys only.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from dicomweb_client import DICOMwebClient

from fetalmlops.anonymizer.catalog import image_id as catalog_image_id
from fetalmlops.common.bus import KafkaBus
from fetalmlops.common.bus.consume import DLQ_ERROR
from fetalmlops.common.db import Image, ImageCopy, create_engine_for, session_scope
from fetalmlops.common.settings import Settings, Topics, settings_env
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.v1 import images_pb2

from .ingest_service import (
    CALLING_AE,
    LABELLER_TOKEN,
    RunningIngest,
    TopicWatch,
    from_beginning,
    running_ingest,
)
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.needs("storescu")]
SECRET = "duplicates-test-secret"
CALLED_AE = "FETALMLOPS"
SYNTAXES = {"-xi": "implicit VR little endian", "-xe": "explicit VR little endian",
            "-xb": "explicit VR big endian"}  # fmt: skip


@dataclass
class Run:
    ingest: RunningIngest
    anonymizer: ServiceProcess
    settings: Settings  # the owner's view, with this run's topics
    study: Path


@pytest.fixture(scope="module")
def run(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("duplicates")
    study = work / "study.dcm"
    # Fresh bytes and a fresh instance every run: the stack remembers every earlier run.
    study.write_bytes(sample_dicom(secrets.randbelow(10**9)))
    tag = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(stack_settings(None).kafka_bootstrap_servers)
    bus.ensure_topics(list(topics.model_dump().values()), 3)
    bus.close()
    own = stack_settings("anonymizer").model_copy(update={"topics": topics})
    env = {**settings_env(own), "FETALMLOPS_ANONYMIZER_SECRET": SECRET}
    anonymizer = ServiceProcess("anonymizer", env, work / "anonymizer.log")
    ingest_settings = stack_settings("ingest").model_copy(update={"topics": topics})
    with running_ingest(stack_settings(None), ingest_settings, work / "ingest.log") as ingest:
        anonymizer.start()
        try:
            yield Run(
                ingest,
                anonymizer,
                stack_settings(None).model_copy(update={"topics": topics}),
                study,
            )
        finally:
            anonymizer.stop()


def storescu(run: Run, syntax: str) -> subprocess.CompletedProcess[str]:
    command = ["storescu", "-aet", CALLING_AE, "-aec", CALLED_AE, syntax,
               "127.0.0.1", str(run.ingest.scp_port), str(run.study)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def stow(run: Run) -> None:
    client = DICOMwebClient(url=f"{run.ingest.url}/dicomweb", headers=run.ingest.writer)
    client.store_instances([pydicom.dcmread(run.study)])


def copy_id(raw_sha256: str) -> str:
    return catalog_image_id(SECRET.encode(), raw_sha256)


def catalogued(run: Run, copy_ids: set[str]) -> dict[str, tuple[str, bool]]:
    """Each known copy of ours → (its image, whether the image's event went out)."""
    engine = create_engine_for(run.settings.database_url)
    try:
        with session_scope(engine) as session:
            rows = session.execute(
                sa.select(ImageCopy.copy_id, Image.id, Image.published_at)
                .join(Image, Image.id == ImageCopy.image_id)
                .where(ImageCopy.copy_id.in_(copy_ids))
            )
            return {copy: (image, published is not None) for copy, image, published in rows}
    finally:
        engine.dispose()


def labels_of(run: Run, image_id: str) -> list[str]:
    engine = create_engine_for(run.settings.database_url)
    try:
        with session_scope(engine) as session:
            image = session.get(Image, image_id)
            return [] if image is None else [label.annotator for label in image.labels]
    finally:
        engine.dispose()


def test_one_instance_sent_four_ways_is_one_image_announced_once(run: Run) -> None:
    received = TopicWatch(run.settings, run.settings.topics.images_received)
    letters = TopicWatch(run.settings, run.settings.topics.deadletter)

    sent = {syntax: storescu(run, syntax) for syntax in SYNTAXES}
    assert sent["-xi"].returncode == 0, sent["-xi"].stderr
    assert sent["-xe"].returncode == 0, sent["-xe"].stderr
    stow(run)

    # Each channel answers only once ingest has announced what it stored, so every copy is on
    # the topic by now; a copy whose bytes match an earlier one is no new raw object.
    shas = {images_pb2.ImageReceived.FromString(r.value).sha256 for r in received.collect(2)}
    assert len(shas) >= 2, "the copies reached the raw zone as different objects"
    copies = {copy_id(sha) for sha in shas}

    def settled() -> bool:
        dead = letters.fresh()
        assert not dead, [dict(r.headers).get(DLQ_ERROR) for r in dead]
        known = catalogued(run, copies)
        return set(known) == copies and all(published for _, published in known.values())

    wait_for(settled, 120, "every copy catalogued and its image announced")
    images = {image for image, _ in catalogued(run, copies).values()}
    assert len(images) == 1, "one catalog image for one source instance"
    (image_id,) = images
    assert image_id in copies, "the image is known by the id of a copy it was made from"

    # A label for the last copy, by the sha256 ingest gave its sender: on the one image.
    last = sorted(shas)[-1]
    labeller = {"Authorization": f"Bearer {LABELLER_TOKEN}"}
    label = {"raw_sha256": last, "plane": "Fetal femur", "annotator": f"dup-{uuid.uuid4().hex[:8]}"}
    httpx.post(f"{run.ingest.url}/v1/labels", json=label, headers=labeller, timeout=30)
    wait_for(lambda: label["annotator"] in labels_of(run, image_id), 60, "the label on the image")

    time.sleep(3)  # room for a second announcement or a late dead letter to show up
    assert letters.fresh() == []
    letters.consumer.close()
    anonymized = from_beginning(run.settings, [run.settings.topics.images_anonymized])
    assert [r.key for r in anonymized] == [image_id.encode()], "exactly one event, for it"
    event = images_pb2.ImageAnonymized.FromString(anonymized[0].value)
    assert event.image_id == image_id

    store = MinioStore(
        run.settings.minio_endpoint,
        run.settings.minio_access_key,
        run.settings.minio_secret_key.get_secret_value(),
    )
    ours = sorted(
        info.key
        for info in store.list(run.settings.buckets.anonymized)
        if any(copy in info.key for copy in copies)
    )
    assert ours == [f"canonical/{image_id}.png", f"images/{image_id}.dcm"], "no orphan objects"
    output = store.get(run.settings.buckets.anonymized, event.dicom.key)
    assert hashlib.sha256(output).hexdigest() == event.dicom.sha256
    source = pydicom.dcmread(run.study)
    assert source.SOPInstanceUID.encode() not in output
    assert pydicom.dcmread(io.BytesIO(output)).SOPInstanceUID != source.SOPInstanceUID
