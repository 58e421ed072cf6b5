"""The chart on the real local cluster, as a platform team runs it, from a DICOM to a rolled-out
model: the images built and imported, the Secrets made, `helm upgrade --install --wait`, and
then, in order (each test takes up where the one before it left the release):

1. every workload Ready, non-root on a read-only root;
2. a DICOM pushed with dcmtk's storescu over C-STORE to ingest's Service is anonymized by the
   anonymizer's pod (its event carries none of the file's PHI), and the C-STORE's trace, from
   ingest's pod to the anonymizer's, reaches the OTLP collector this module runs, every span
   with its pod's `k8s.*` resource attributes;
3. phantom studies imported over HTTP through ingest's Service are catalogued; a training
   request to the trainer's API becomes a Job that runs to completion and leaves version 1 in
   MinIO and the registry;
4. `helm upgrade` enables the InferenceService on it: KServe's storage initializer copies the
   version, the predictor becomes Ready, a V1 predict through its Service answers, and its
   prediction event reaches the monitor (its row in `observed_predictions`);
5. a second Job trains version 2, and `helm upgrade` to it replaces the predictor's pod while a
   client sends requests throughout: none fails, and the new pod answers with v2;
6. the anonymizer scaled to 3 replicas splits the topic's partitions and anonymizes a burst of
   C-STOREs, each image once: no duplicate, no loss;
7. `helm uninstall` leaves nothing of the release in its namespace.

`cluster down` at the end of the session then leaves nothing on the host (`conftest.py`).

The release runs in a namespace of its own, on topics of its own (`config.FETALMLOPS_TOPICS__*`)
and a model name of its own, so the stack's earlier events and versions never reach it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient

from fetalmlops.anonymizer.catalog import image_id as catalog_image_id
from fetalmlops.cluster.builds import Binaries
from fetalmlops.cluster.images import Buildah, service_images
from fetalmlops.cluster.kube import Kubectl, condition, wait_for
from fetalmlops.cluster.layout import Layout
from fetalmlops.cluster.load import imported
from fetalmlops.cluster.release import Release, Tokens
from fetalmlops.cluster.tools import HELM
from fetalmlops.common.bus import KafkaBus, read_event
from fetalmlops.common.db import (
    Image,
    Label,
    ModelVersion,
    ObservedPrediction,
    create_engine_for,
    session_scope,
)
from fetalmlops.common.settings import Settings, Topics
from fetalmlops.common.store import MinioStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.stack.config import StackConfig
from fetalmlops.stack.errors import StackError
from fetalmlops.trainer.dispatch import job_name
from fetalmlops.v1 import images_pb2

from ..integration.collector import Collected, otlp_collector
from ..integration.model_versions import phantom_pngs
from ..integration.phantoms import tag_cohorts

pytestmark = [pytest.mark.cluster, pytest.mark.stack, pytest.mark.timeout(3600)]

NEEDED = ("buildah", "containerd", "runc", "go", "storescu")
CALLING_AE = "FETAL_PACS"  # ingest's default allowed caller
FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
# Small and quick on two cores: the gate's floors are the unit tests' business.
HYPERPARAMETERS = {"epochs": 15, "patience": 15, "input_size": 64}
JOB_TIMEOUT_S = 900
READY_TIMEOUT_S = 600
BURST = 24


@dataclass
class Platform:
    layout: Layout
    release: Release
    kubectl: Kubectl
    topics: Topics
    owner: Settings  # the stack as its owner sees it, with this release's topics
    tokens: Tokens
    tag: str
    collected: Collected
    settings: list[str]  # the release's `--set`s: each upgrade gives them again
    work: Path
    versions: dict[int, ModelVersion] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.release.namespace

    @property
    def model(self) -> str:
        return f"planes-{self.tag}"

    def cohort(self, profile: str) -> str:
        return f"{profile}-{self.tag}"

    def get(self, *args: str) -> dict[str, Any]:
        found = self.kubectl.get(["-n", self.namespace, *args])
        assert found is not None, args
        return found

    def service(self, name: str) -> str:
        """``<cluster IP>:<port>`` of the Service's port named http (its first, else)."""
        spec = self.get("service", name)["spec"]
        port = next((p for p in spec["ports"] if p.get("name") == "http"), spec["ports"][0])
        return f"{spec['clusterIP']}:{port['port']}"

    def upgrade(self, *settings: str) -> float:
        """`helm upgrade --install --wait` with the release's settings and ``settings``; the
        seconds it took."""
        self.settings += settings
        began = time.monotonic()
        self.release.install(settings=self.settings)
        return time.monotonic() - began

    def engine(self) -> sa.Engine:
        return create_engine_for(self.owner.database_url)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.operator}"}


def private_topics(bootstrap_servers: str, tag: str) -> Topics:
    topics = Topics(**{k: f"test.{tag}.{v}" for k, v in Topics().model_dump().items()})
    bus = KafkaBus(bootstrap_servers)
    try:
        bus.ensure_topics(list(topics.model_dump().values()), 3)
    finally:
        bus.close()
    return topics


@pytest.fixture(scope="module")
def platform(
    running_cluster: Layout,
    stack_settings: Callable[[str | None], Settings],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    missing = [program for program in NEEDED if shutil.which(program) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make system-packages)")
    layout = running_cluster
    kubectl_path = Binaries(layout).kube("kubectl")
    kubectl = Kubectl(kubectl_path, layout.admin_kubeconfig, layout.logs / "test-kubectl.log")
    tag = uuid.uuid4().hex[:6]
    release = Release(
        str(kubectl_path), HELM.ensure(layout.cache), layout.admin_kubeconfig, namespace=f"fm-{tag}"
    )
    node = StackConfig().node_address
    # The collector listens at the node address, where pods reach the host.
    with otlp_collector(host=node) as (endpoint, collected):
        try:
            tags = service_images(Buildah(layout.cache), layout.cache)
            imported(layout, tags.values(), print)
            owner = stack_settings(None)
            topics = private_topics(owner.kafka_bootstrap_servers, tag)
            tokens = Tokens.load_or_make(layout.root / "tokens.json")
            release.apply_secrets(StackConfig(), tokens)
            port = endpoint.rsplit(":", 1)[1].split("/", 1)[0]
            settings = [
                *(f"config.FETALMLOPS_TOPICS__{name.upper()}={topic}"
                  for name, topic in topics.model_dump().items()),
                f"observability.otlp.endpoint={endpoint}",
                f"observability.otlp.cidrs={{{node}/32}}",
                f"observability.otlp.ports={{{port}}}",
                f"inference.model.name=planes-{tag}",
                "inference.enabled=false",  # enabled once its first version exists
                "config.FETALMLOPS_TRAINER_MIN_MACRO_F1=0.3",
                "config.FETALMLOPS_TRAINER_MIN_CLASS_RECALL=0.0",
            ]  # fmt: skip
            platform = Platform(
                layout, release, kubectl, topics,
                owner.model_copy(update={"topics": topics}), tokens, tag, collected, [],
                tmp_path_factory.mktemp("platform"),
            )  # fmt: skip
            print(f"helm upgrade --install --wait: {platform.upgrade(*settings):.1f} s")
            yield platform
        finally:
            release.uninstall()
            kubectl.run(["delete", "namespace", release.namespace, "--wait=true"], check=False)


def test_every_workload_of_the_release_is_ready(platform: Platform) -> None:
    deployments = platform.get("deployments")["items"]
    names = {d["metadata"]["name"] for d in deployments}
    assert {
        "fetalmlops-ingest",
        "fetalmlops-anonymizer",
        "fetalmlops-monitor",
        "fetalmlops-trainer",
        "fetalmlops-training-dispatcher",
    } <= names
    for deployment in deployments:
        status, wanted = deployment.get("status", {}), deployment["spec"]["replicas"]
        assert status.get("readyReplicas", 0) == wanted, deployment["metadata"]["name"]
    pods = platform.get("pods", "-l", "app.kubernetes.io/name=fetalmlops")["items"]
    assert pods
    for pod in pods:
        security = pod["spec"]["securityContext"]
        assert security.get("runAsNonRoot") is True, pod["metadata"]["name"]
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def store_scu(platform: Platform, paths: list[Path]) -> None:
    host, port = platform.service("fetalmlops-ingest").split(":")[0], "11112"
    sent = subprocess.run(
        ["storescu", "-aet", CALLING_AE, "-aec", "FETALMLOPS", host, port, *map(str, paths)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr


class AnonymizedWatch:
    """The release's ImageAnonymized events, read by a group of the test's own."""

    def __init__(self, platform: Platform) -> None:
        self.bus = KafkaBus(platform.owner.kafka_bootstrap_servers)
        self.consumer = self.bus.subscribe(
            [platform.topics.images_anonymized], f"test-{uuid.uuid4().hex[:6]}"
        )
        self.events: list[images_pb2.ImageAnonymized] = []
        self.raw: list[bytes] = []

    def read(
        self, until: Callable[[list[images_pb2.ImageAnonymized]], bool], timeout_s: float
    ) -> list[images_pb2.ImageAnonymized]:
        """Every event so far, polling until ``until`` holds or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while not until(self.events) and time.monotonic() < deadline:
            for record in self.consumer.poll(1.0):
                event = read_event(record)
                assert isinstance(event, images_pb2.ImageAnonymized)
                self.events.append(event)
                self.raw.append(record.value)
        return self.events


@contextmanager
def anonymized(platform: Platform) -> Iterator[AnonymizedWatch]:
    """Subscribed before the caller sends anything."""
    watch = AnonymizedWatch(platform)
    try:
        yield watch
    finally:
        watch.consumer.close()
        watch.bus.close()


def test_a_dicom_pushed_over_c_store_is_anonymized_in_one_exported_trace(
    platform: Platform, tmp_path: Path
) -> None:
    dataset = pydicom.dcmread(io.BytesIO(sample_dicom(secrets.randbelow(10**9))))
    path = tmp_path / "study.dcm"
    dataset.save_as(path, enforce_file_format=True)
    phi = [str(dataset.PatientName), str(dataset.PatientID)]
    with anonymized(platform) as watch:
        store_scu(platform, [path])
        events = watch.read(bool, 120)
    assert len(events) == 1, "no anonymized event within 120 s of the C-STORE"
    for value in phi:
        assert value.encode() not in watch.raw[0]

    def traced() -> dict[str, Any] | None:
        for spans in platform.collected.traces().values():
            names = {span.name for span in spans}
            if "C-STORE" in names and f"{platform.topics.images_anonymized} publish" in names:
                return {span.name: span for span in spans}
        return None

    wait_for(lambda: traced() is not None, "the C-STORE's trace at the collector", 60)
    trace = traced()
    assert trace is not None
    store, published = trace["C-STORE"], trace[f"{platform.topics.images_anonymized} publish"]
    assert store.resource["service.name"].endswith("ingest")
    assert published.resource["service.name"].endswith("anonymizer")
    for span in trace.values():
        assert span.resource["k8s.namespace.name"] == platform.namespace
        assert span.resource["service.name"] in span.resource["k8s.pod.name"]
        assert span.resource["k8s.node.name"]
    assert store.resource["k8s.pod.name"] != published.resource["k8s.pod.name"]
    exported = "\n".join(platform.collected.texts())
    for value in phi:
        assert value not in exported


def phantom_dataset(out: Path, tag: str) -> Path:
    """Phantom studies whose cohorts name this run, so the catalog's older images stay out."""
    seed = secrets.randbelow(10**6)
    generate(out, plan(48, seed=seed), seed=seed, fmt=OutputFormat.DICOM)
    return tag_cohorts(out, tag)


@pytest.fixture(scope="module")
def catalogued(platform: Platform) -> None:
    """48 phantom studies imported through ingest's Service, catalogued with their labels."""
    dataset = phantom_dataset(platform.work / "phantom", platform.tag)
    secret = platform.tokens.anonymizer_secret.encode()
    images = {
        catalog_image_id(secret, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in (dataset / "dicom").glob("*.dcm")
    }
    began = time.monotonic()
    subprocess.run(
        [str(FETALMLOPS), "dataset", "import", str(dataset), "--format", "csv",
         "--url", f"http://{platform.service('fetalmlops-ingest')}",
         "--token", platform.tokens.operator, "--journal-dir", str(platform.work / "journal")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    engine = platform.engine()

    def done() -> bool:
        with session_scope(engine) as session:
            count = sa.select(sa.func.count())
            stored = session.scalar(count.select_from(Image).where(Image.id.in_(images)))
            labelled = session.scalar(count.select_from(Label).where(Label.image_id.in_(images)))
        return stored == labelled == len(images)

    try:
        wait_for(done, f"{len(images)} studies catalogued with their labels", 600)
    finally:
        engine.dispose()
    print(f"{len(images)} studies imported and catalogued in {time.monotonic() - began:.0f} s")


def train(platform: Platform, version: int, snapshot_id: str | None = None) -> ModelVersion:
    """POST a training request to the trainer's Service; its Job must complete and register
    ``version``."""
    # Another seed for each version: the same request again would find the version it made.
    hyperparameters = {**HYPERPARAMETERS, "seed": version}
    body = {
        "model_name": platform.model, "backbone": "tiny", "hyperparameters": hyperparameters,
        "held_out_cohorts": [platform.cohort("portable")],
    }  # fmt: skip
    if snapshot_id:
        body["snapshot_id"] = snapshot_id
    else:
        body["cohorts"] = [platform.cohort("highend-a"), platform.cohort("highend-b")]
    url = f"http://{platform.service('fetalmlops-trainer')}/v1/training-requests"
    answer = httpx.post(url, json=body, headers=platform.auth(), timeout=30)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    began = time.monotonic()

    name = job_name(request_id)

    def finished() -> bool:
        found = platform.kubectl.get(["-n", platform.namespace, "job", name])
        assert not condition(found, "Failed"), found and found.get("status")
        return condition(found, "Complete")

    wait_for(finished, f"training Job {name} complete", JOB_TIMEOUT_S,
             f"kubectl -n {platform.namespace} logs job/{name}")  # fmt: skip
    print(f"training Job for v{version} complete {time.monotonic() - began:.0f} s after request")
    engine = platform.engine()
    try:
        with session_scope(engine) as session:
            registered = session.scalars(
                sa.select(ModelVersion).where(
                    ModelVersion.model_name == platform.model, ModelVersion.version == version
                )
            ).one()
            session.expunge(registered)
    finally:
        engine.dispose()
    platform.versions[version] = registered
    return registered


def test_a_training_request_runs_as_a_job_that_leaves_a_version_in_minio(
    platform: Platform, catalogued: None
) -> None:
    version = train(platform, 1)
    assert version.storage_uri == f"s3://{platform.owner.buckets.models}/{platform.model}/v1/"
    store = MinioStore(
        platform.owner.minio_endpoint,
        platform.owner.minio_access_key,
        platform.owner.minio_secret_key.get_secret_value(),
    )
    keys = {info.key for info in store.list(platform.owner.buckets.models, f"{platform.model}/v1/")}
    assert f"{platform.model}/v1/model-store/{platform.model}.mar" in keys
    assert f"{platform.model}/v1/config/config.properties" in keys


def isvc_ready(platform: Platform, version: int) -> Callable[[], bool]:
    def ready() -> bool:
        found = platform.kubectl.get(["-n", platform.namespace, "inferenceservice", platform.model])
        if found is None or not condition(found, "Ready"):
            return False
        return str(found["spec"]["predictor"]["model"]["storageUri"]).endswith(f"/v{version}/")

    return ready


def predict_url(platform: Platform) -> str:
    predictor = platform.service(f"{platform.model}-predictor")
    return f"http://{predictor}/v1/models/{platform.model}:predict"


def predictor_pods(platform: Platform) -> list[dict[str, Any]]:
    selector = f"serving.kserve.io/inferenceservice={platform.model}"
    pods: list[dict[str, Any]] = platform.get("pods", "-l", selector)["items"]
    return pods


def v1_body(seed: int) -> dict[str, Any]:
    (png,) = phantom_pngs(1, seed=seed)
    return {"instances": [{"b64": base64.b64encode(png).decode()}]}


def test_the_inference_service_serves_the_version_and_the_monitor_sees_it(
    platform: Platform,
) -> None:
    assert 1 in platform.versions, "needs the version trained above"
    began = time.monotonic()
    platform.upgrade("inference.enabled=true", "inference.model.version=1")
    hint = f"kubectl -n {platform.namespace} describe inferenceservice {platform.model}"
    wait_for(isvc_ready(platform, 1), "the InferenceService Ready", READY_TIMEOUT_S, hint)
    print(f"InferenceService Ready {time.monotonic() - began:.0f} s after the upgrade")
    (init,) = predictor_pods(platform)[0]["spec"]["initContainers"]
    assert init["name"] == "storage-initializer" and "kserve-storage-initializer" in init["image"]

    answer = httpx.post(predict_url(platform), json=v1_body(7), headers=platform.auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    assert prediction["model_name"] == platform.model and prediction["model_version"] == "1"
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4

    engine = platform.engine()

    def observed() -> bool:
        with session_scope(engine) as session:
            rows = session.scalar(
                sa.select(sa.func.count())
                .select_from(ObservedPrediction)
                .where(ObservedPrediction.model_name == platform.model)
            )
        return bool(rows)

    try:
        wait_for(observed, "the prediction in the monitor's observed_predictions", 120)
    finally:
        engine.dispose()


@dataclass
class Client:
    """Sends V1 requests one after another, each on a new connection, until stopped."""

    url: str
    headers: dict[str, str]
    answered: Counter[str] = field(default_factory=Counter)  # model version → answers
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body, n = v1_body(11), 0
        while not self.stop.is_set():
            n += 1
            try:
                answer = httpx.post(self.url, json=body, headers=self.headers, timeout=30)
            except httpx.HTTPError as exc:
                self.failures.append(f"request {n}: {type(exc).__name__}: {exc}")
                continue
            if answer.status_code != 200:
                self.failures.append(f"request {n}: HTTP {answer.status_code} {answer.text[:200]}")
                continue
            self.answered[answer.json()["predictions"][0]["model_version"]] += 1


def test_a_new_version_is_followed_then_rolled_out_with_no_failed_request(
    platform: Platform,
) -> None:
    """A client sends requests throughout: while version 2 is trained (and, if the gate promotes
    it, followed by the running predictor), and while `helm upgrade` to it replaces the
    predictor's pod, the new one loading v2 from its storageUri."""
    assert 1 in platform.versions, "needs the version trained above"
    (before,) = [pod["metadata"]["name"] for pod in predictor_pods(platform)]
    client = Client(predict_url(platform), platform.auth())
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        train(platform, 2, snapshot_id=platform.versions[1].snapshot_id)
        wait_for(lambda: sum(client.answered.values()) > 0, "answers before the roll", 60)
        took = platform.upgrade("inference.model.version=2")
        wait_for(isvc_ready(platform, 2), "the InferenceService Ready on v2", READY_TIMEOUT_S)

        def rolled() -> bool:  # KServe's Deployment surges a pod, then drops the old one
            names = [pod["metadata"]["name"] for pod in predictor_pods(platform)]
            return len(names) == 1 and names != [before]

        wait_for(rolled, "one predictor pod, a new one", READY_TIMEOUT_S)
        (after,) = predictor_pods(platform)
        assert "/v2/" in str(after["spec"]), "the new pod's storage initializer copies v2"
        answered = sum(client.answered.values())
        wait_for(lambda: sum(client.answered.values()) > answered + 5, "answers after the roll", 60)
    finally:
        client.stop.set()
        thread.join(60)
    print(f"helm upgrade {took:.0f} s; answers by version: {dict(client.answered)}")
    assert client.failures == []
    assert client.answered["2"] > 0, "the new pod answers with the version it was given"


def group_members(platform: Platform, group: str) -> list[set[int]]:
    """The partitions of the images-received topic each member of ``group`` holds, once the
    group is stable (none while it rebalances)."""
    admin = KafkaAdminClient(bootstrap_servers=platform.owner.kafka_bootstrap_servers)
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    if described["group_state"] != "Stable":
        return []
    return [
        {
            partition
            for assigned in member["member_assignment"]["assigned_partitions"]
            if assigned["topic"] == platform.topics.images_received
            for partition in assigned["partitions"]
        }
        for member in described["members"]
    ]


def test_three_anonymizer_replicas_split_a_burst_with_no_duplicate_and_no_loss(
    platform: Platform, tmp_path: Path
) -> None:
    platform.upgrade("anonymizer.replicas=3")

    def split() -> bool:  # the group's members that hold partitions of the release's topic
        held = [partitions for partitions in group_members(platform, "anonymizer") if partitions]
        return len(held) == 3 and set().union(*held) == {0, 1, 2}

    wait_for(split, "3 anonymizers holding one partition each", 180)
    paths = []
    for n in range(BURST):
        paths.append(tmp_path / f"{n}.dcm")
        paths[-1].write_bytes(sample_dicom(secrets.randbelow(10**9)))

    def new(events: list[images_pb2.ImageAnonymized]) -> set[str]:
        return {event.image_id for event in events[earlier:]}

    # An image's id is its pseudonym of the bytes ingest received, which C-STORE re-encodes:
    # the burst is counted, not named.
    with anonymized(platform) as watch:
        earlier = len(watch.read(lambda _: False, 15))  # what the topic held before the burst
        store_scu(platform, paths)
        watch.read(lambda events: len(new(events)) >= BURST, 300)
        events = watch.read(lambda _: False, 10)[earlier:]  # a duplicate comes after its original
    seen = Counter(event.image_id for event in events)
    assert len(seen) == BURST, f"{BURST - len(seen)} of {BURST} lost"
    assert [image for image, count in seen.items() if count > 1] == []
    pods = {
        span.resource["k8s.pod.name"]
        for spans in platform.collected.traces().values()
        for span in spans
        if span.name == f"{platform.topics.images_anonymized} publish"
    }
    assert len(pods) >= 3, f"the burst was anonymized by {pods}"


def test_helm_uninstall_leaves_nothing_of_the_release(platform: Platform) -> None:
    """Everything the release made goes. The training runs' Jobs and pods are the dispatcher's
    records, not the release's: they stay until their TTL, or the namespace, takes them."""
    platform.release.uninstall()
    kinds = "deployments,replicasets,pods,services,jobs,configmaps,inferenceservices"
    kinds += ",servingruntimes"

    def left() -> list[str]:
        return [
            f"{o['kind']}/{o['metadata']['name']}"
            for o in platform.get(kinds)["items"]
            # The namespace's CA bundle is Kubernetes' own.
            if o["metadata"]["name"] != "kube-root-ca.crt"
            and "fetalmlops/request-id" not in (o["metadata"].get("labels") or {})
        ]

    try:
        wait_for(lambda: left() == [], "the release's objects gone", 180)
    except StackError:
        pytest.fail(f"left after helm uninstall: {left()}")
