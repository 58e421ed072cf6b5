"""The dispatcher: each training request one Kubernetes Job, named by its request, carrying it;
and the Job's side (`request_job`), which runs it through the trainer's own handler."""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from fetalmlops.common.bus import Consumer, EmbeddedBus, Record, Rejected, RetryPolicy, handle
from fetalmlops.common.bus.consume import DLQ_ERROR, DLQ_GROUP, handled
from fetalmlops.common.db import create_engine_for, upgrade
from fetalmlops.common.events import SCHEMA_HEADER, UnknownSchema, schema_name
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.trainer import dispatch
from fetalmlops.trainer.dispatch import (
    REJECTED_EXIT,
    Dispatcher,
    TemplateError,
    TrainingRequest,
    build,
    job_manifest,
    job_name,
    label_value,
    load_template,
    training_request,
)
from fetalmlops.trainer.kubernetes_api import (
    ApiRefused,
    ApiUnavailable,
    ConfigError,
    Credentials,
    KubernetesApi,
    from_kubeconfig,
    in_cluster,
)
from fetalmlops.trainer.main import Trainer
from fetalmlops.trainer.main import build as build_trainer
from fetalmlops.trainer.platform import Platform
from fetalmlops.trainer.request_job import JOB_GROUP, request_record, run_request
from fetalmlops.trainer.settings import DispatcherSettings, TrainerSettings
from fetalmlops.v1 import models_pb2, training_pb2

TOPIC = Settings().topics.training_requested
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"labels": {"app.kubernetes.io/instance": "fetalmlops"}},
    "spec": {
        "backoffLimit": 2,
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
        },
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": "fetalmlops/trainer:test",
                        "env": [
                            {"name": "FETALMLOPS_BUS", "value": "kafka"},
                            {"name": "TRACEPARENT", "value": "stale"},
                        ],
                    }
                ]
            }
        },
    },
}


def request_event(request_id: str = "3f2a9c1e-7b4d-4e1a-9c2b-0d5e6f7a8b9c", **fields: Any) -> Any:
    return training_pb2.TrainingRequested(request_id=request_id, **fields)


def record_of(event: Any, offset: int = 7, traceparent: str | None = TRACEPARENT) -> Record:
    headers = [(SCHEMA_HEADER, schema_name(event).encode())]
    if traceparent:
        headers.append(("traceparent", traceparent.encode()))
    key = getattr(event, "request_id", "") or None
    return Record(TOPIC, 2, offset, key, event.SerializeToString(), tuple(headers))


def request_of(event: Any = None, **fields: Any) -> TrainingRequest:
    record = record_of(event or request_event(**fields))
    return training_request(record, "fetal-planes", (("traceparent", TRACEPARENT),))


def env_of(job: Mapping[str, Any]) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {variable["name"]: variable["value"] for variable in container["env"]}


# --- names ------------------------------------------------------------------------------------


def test_a_request_id_that_is_a_dns_label_names_its_job_as_it_is() -> None:
    assert job_name("3f2a9c1e-7b4d-4e1a-9c2b-0d5e6f7a8b9c") == (
        "train-3f2a9c1e-7b4d-4e1a-9c2b-0d5e6f7a8b9c"
    )


@pytest.mark.parametrize(
    "request_id",
    [
        "ABC",
        "abc",
        "Drift/fetal-planes/v3/GE Voluson E10/episode 2",
        "x" * 200,
        "x" * 201,
        "--__--",
        "é",
        "",
        "a" * 57,
        "a" * 58,
    ],
)
def test_every_request_id_names_a_valid_stable_job(request_id: str) -> None:
    name = job_name(request_id)
    assert dispatch.DNS_LABEL.fullmatch(name) and len(name) <= 63, name
    assert job_name(request_id) == name  # a replay finds the same Job
    value = label_value(request_id)
    assert dispatch.LABEL_VALUE.fullmatch(value) and len(value) <= 63, value


def test_ids_that_read_alike_never_share_a_job() -> None:
    ids = ["ABC", "abc", "a_b_c", "a-b-c", "a.b.c", "x" * 200, "x" * 201, "é", "è", ""]
    assert len({job_name(i) for i in ids}) == len(ids)
    assert len({label_value(i) for i in ids}) == len(ids)


# --- the manifest -----------------------------------------------------------------------------


def test_the_job_carries_the_request_its_labels_and_its_trace() -> None:
    event = request_event(model_name="planes-portable", backbone="resnet18")
    record = record_of(event)
    request = training_request(record, "fetal-planes", (("traceparent", TRACEPARENT),))
    original = copy.deepcopy(TEMPLATE)

    job = job_manifest(TEMPLATE, request, "training")

    assert original == TEMPLATE  # the template is not changed
    metadata = job["metadata"]
    assert (metadata["name"], metadata["namespace"]) == (job_name(event.request_id), "training")
    labels = {
        "app.kubernetes.io/name": "fetalmlops",
        "app.kubernetes.io/component": "training",
        "fetalmlops/request-id": event.request_id,
        "fetalmlops/model": "planes-portable",
    }
    assert metadata["labels"] == labels | {"app.kubernetes.io/instance": "fetalmlops"}
    assert metadata["annotations"] == {"fetalmlops/request-id": event.request_id}
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    env = env_of(job)
    assert base64.b64decode(env[dispatch.REQUEST_ENV]) == record.value
    assert env[dispatch.SOURCE_ENV] == f"{TOPIC}:2:7"
    assert env["TRACEPARENT"] == TRACEPARENT  # the template's stale one replaced
    assert env["FETALMLOPS_BUS"] == "kafka"  # the template's own kept
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "fetalmlops.trainer.request_job"]
    assert pod["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [REJECTED_EXIT]},
    }
    assert rules[1:] == TEMPLATE["spec"]["podFailurePolicy"]["rules"]
    assert job["spec"]["backoffLimit"] == 2


def test_a_replay_makes_the_same_job() -> None:
    assert job_manifest(TEMPLATE, request_of(), "t") == job_manifest(TEMPLATE, request_of(), "t")


def test_a_request_naming_no_model_is_labelled_with_the_trainers() -> None:
    job = job_manifest(TEMPLATE, request_of(), "t")
    assert job["metadata"]["labels"]["fetalmlops/model"] == "fetal-planes"


def test_the_templates_command_and_only_container_are_kept() -> None:
    template = copy.deepcopy(TEMPLATE)
    (container,) = template["spec"]["template"]["spec"]["containers"]
    container |= {"name": "run", "command": ["fetalmlops", "train-request"]}
    job = job_manifest(template, request_of(), "t")
    (kept,) = job["spec"]["template"]["spec"]["containers"]
    assert kept["command"] == ["fetalmlops", "train-request"]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] == "run"


def test_among_several_containers_the_trainer_gets_the_request() -> None:
    template = copy.deepcopy(TEMPLATE)
    containers = template["spec"]["template"]["spec"]["containers"]
    containers.insert(0, {"name": "proxy", "image": "proxy"})
    job = job_manifest(template, request_of(), "t")
    proxy, trainer = job["spec"]["template"]["spec"]["containers"]
    assert "env" not in proxy and dispatch.REQUEST_ENV in {v["name"] for v in trainer["env"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t["spec"]["template"]["spec"].pop("containers"), "no container"),
        (lambda t: t["spec"]["template"]["spec"].update(containers=[]), "no container"),
        (lambda t: t["spec"].pop("template"), "no container"),
        (
            lambda t: (
                t["spec"]["template"]["spec"]["containers"].extend([{"name": "a"}, {"name": "b"}])
                or t["spec"]["template"]["spec"]["containers"].pop(0)
            ),
            "none named 'trainer'",
        ),
        (
            lambda t: t["spec"]["template"]["spec"]["containers"][0].pop("name"),
            "needs a name",
        ),
        (
            lambda t: t["spec"]["template"]["spec"].update(restartPolicy="OnFailure"),
            "must be Never",
        ),
        (lambda t: t.update(kind="Deployment", apiVersion="apps/v1"), "batch/v1 Job"),
        (lambda t: t.update(spec=["not", "a", "mapping"]), "spec must be a mapping"),
    ],
)
def test_a_template_that_cannot_carry_the_request_is_refused(change: Any, reason: str) -> None:
    template = copy.deepcopy(TEMPLATE)
    change(template)
    with pytest.raises(TemplateError, match=reason):
        job_manifest(template, request_of(), "t")


def test_the_template_file_is_checked_when_read(tmp_path: Path) -> None:
    good = tmp_path / "job.yaml"
    good.write_text(yaml.safe_dump(TEMPLATE))
    assert load_template(good) == TEMPLATE
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"kind": "Job", "spec": {"template": {"spec": {}}}}))
    with pytest.raises(TemplateError, match="no container"):
        load_template(empty)
    with pytest.raises(TemplateError, match="No such file"):
        load_template(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(TemplateError, match="not a mapping"):
        load_template(tmp_path / "list.yaml")


# --- reading the request ----------------------------------------------------------------------


def test_only_a_training_request_with_an_id_is_dispatched() -> None:
    with pytest.raises(UnknownSchema):
        training_request(Record(TOPIC, 0, 0, None, b"\x00junk", ()), "m")
    trained = models_pb2.ModelTrained(model_name="planes")
    with pytest.raises(Rejected, match="expected TrainingRequested"):
        training_request(record_of(trained), "m")
    with pytest.raises(Rejected, match="without request_id"):
        training_request(record_of(request_event("")), "m")
    unnamed = request_event("")
    unnamed.meta.event_id = "0b6c2f1e-1111-4222-8333-944455566677"
    assert training_request(record_of(unnamed), "m").request_id == unnamed.meta.event_id


# --- the handler ------------------------------------------------------------------------------


class FakeJobs:
    """The Jobs API as etcd would keep them: a second create of a name is AlreadyExists."""

    def __init__(self, failures: list[Exception] | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.failures = failures or []
        self.calls = 0

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> bool:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        name = f"{namespace}/{job['metadata']['name']}"
        if name in self.jobs:
            return False
        self.jobs[name] = dict(job)
        return True


def dispatcher(api: FakeJobs) -> Dispatcher:
    return Dispatcher(api, TEMPLATE, "training", "fetal-planes")


def deadletters(bus: EmbeddedBus) -> list[Record]:
    subscription = bus.subscribe([Settings().topics.deadletter], "test-dlq")
    records = subscription.poll(0.2)
    subscription.close()
    return records


def consumer_of(handler: Any) -> Consumer:
    return Consumer([TOPIC], "dispatcher", handler, Settings().topics.deadletter, RetryPolicy(3, 0))


def test_one_job_per_request_and_a_replay_is_a_no_op() -> None:
    api, bus = FakeJobs(), EmbeddedBus()
    record = record_of(request_event())
    handle(bus, consumer_of(dispatcher(api).handle), record)
    handle(bus, consumer_of(dispatcher(api).handle), record)  # redelivered after a crash
    assert list(api.jobs) == [f"training/{job_name(request_event().request_id)}"]
    assert api.calls == 2 and deadletters(bus) == []


def test_an_unavailable_api_holds_the_request_until_it_answers() -> None:
    api = FakeJobs([ApiUnavailable("POST jobs: 503"), ApiUnavailable("ConnectError")])
    bus = EmbeddedBus()
    consumer = consumer_of(dispatcher(api).handle)
    assert handled(bus, consumer, record_of(request_event()), threading.Event())
    assert len(api.jobs) == 1 and api.calls == 3 and deadletters(bus) == []
    with pytest.raises(ApiUnavailable):  # not Rejected: the request was not at fault
        dispatcher(FakeJobs([ApiUnavailable("503")])).handle(record_of(request_event()))


def test_a_refused_job_is_dead_lettered_with_a_reason_that_quotes_no_request() -> None:
    secret_id = "request-that-must-not-be-quoted"
    refused = ApiRefused(422, "Invalid", ("spec.template.spec.containers[0].env[2].value",))
    api, bus = FakeJobs([refused]), EmbeddedBus()
    handle(bus, consumer_of(dispatcher(api).handle), record_of(request_event(secret_id)))
    (letter,) = deadletters(bus)
    reason = letter.header(DLQ_ERROR)
    assert reason is not None and secret_id.encode() not in reason
    assert reason.decode() == (
        "Rejected: the Kubernetes API refused the training Job: "
        "422 Invalid at spec.template.spec.containers[0].env[2].value"
    )
    assert api.calls == 1  # a refusal is not retried


def test_a_bad_event_is_dead_lettered_with_its_cause() -> None:
    api, bus = FakeJobs(), EmbeddedBus()
    handle(bus, consumer_of(dispatcher(api).handle), Record(TOPIC, 0, 3, "k", b"\x00", ()))
    (letter,) = deadletters(bus)
    assert letter.header(DLQ_ERROR) == b"UnknownSchema: no fetalmlops-schema header"
    assert api.calls == 0


# --- the Kubernetes API client ----------------------------------------------------------------


def api_answering(answer: Any, token: list[str] | None = None) -> KubernetesApi:
    tokens = iter(token or ["t0"])
    credentials = Credentials(server="https://kubernetes.test:6443", token=lambda: next(tokens))
    return KubernetesApi(credentials, transport=httpx.MockTransport(answer))


def status(code: int, reason: str, **details: Any) -> httpx.Response:
    body = {"kind": "Status", "code": code, "reason": reason, "message": "quotes secret-value"}
    return httpx.Response(code, json=body | ({"details": details} if details else {}))


def test_the_api_client_tells_created_existed_refused_and_unavailable_apart() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=json.loads(request.content))

    api = api_answering(answer, ["first", "rotated"])
    assert api.create_job("training", {"metadata": {"name": "train-a"}}) is True
    assert api.create_job("training", {"metadata": {"name": "train-b"}}) is True
    assert seen[0].url.path == "/apis/batch/v1/namespaces/training/jobs"
    # The token file is read at each call: the kubelet rotates bound tokens.
    assert [r.headers["authorization"] for r in seen] == ["Bearer first", "Bearer rotated"]

    exists = api_answering(lambda r: status(409, "AlreadyExists"))
    assert exists.create_job("training", {}) is False
    causes = [{"field": "metadata.name", "reason": "FieldValueInvalid", "message": "secret"}]
    with pytest.raises(ApiRefused) as refused:
        api_answering(lambda r: status(422, "Invalid", causes=causes)).create_job("t", {})
    assert str(refused.value) == "422 Invalid at metadata.name"
    with pytest.raises(ApiRefused, match="403 Forbidden"):
        api_answering(lambda r: status(403, "Forbidden")).create_job("t", {})
    for transient in (503, 500, 429):
        with pytest.raises(ApiUnavailable):
            api_answering(lambda r, code=transient: status(code, "x")).create_job("t", {})

    def refuse_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ApiUnavailable, match="ConnectError"):
        api_answering(refuse_connection).create_job("t", {})


def test_credentials_from_a_kubeconfig_context(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    (tmp_path / "ca.crt").write_text("CA PEM")
    config: dict[str, Any] = {
        "current-context": "admin",
        "contexts": [
            {"name": "admin", "context": {"cluster": "local", "user": "admin"}},
            {"name": "dev", "context": {"cluster": "local", "user": "dev", "namespace": "ml"}},
        ],
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": "https://10.250.0.1:6443/",
                    "certificate-authority": "ca.crt",
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": base64.b64encode(b"CERT PEM").decode(),
                    "client-key-data": base64.b64encode(b"KEY PEM").decode(),
                },
            },
            {"name": "dev", "user": {"tokenFile": "token"}},
            {"name": "cloud", "user": {"exec": {"command": "gke-gcloud-auth-plugin"}}},
        ],
    }  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    admin = from_kubeconfig(path)
    assert (admin.server, admin.ca_pem, admin.token, admin.namespace) == (
        "https://10.250.0.1:6443", "CA PEM", None, None,
    )  # fmt: skip
    assert (admin.client_cert_pem, admin.client_key_pem) == ("CERT PEM", "KEY PEM")
    dev = from_kubeconfig(path, "dev")
    assert dev.token is not None and dev.token() == "from-a-file" and dev.namespace == "ml"
    config["contexts"].append({"name": "cloud", "context": {"cluster": "local", "user": "cloud"}})
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="plugin"):
        from_kubeconfig(path, "cloud")
    with pytest.raises(ConfigError, match="no context named 'absent'"):
        from_kubeconfig(path, "absent")


def test_credentials_in_a_pod(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("CA PEM")
    (tmp_path / "namespace").write_text("fetalmlops\n")
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    pod = in_cluster(tmp_path, environ)
    assert (pod.server, pod.namespace, pod.ca_pem) == (
        "https://10.96.0.1:443",
        "fetalmlops",
        "CA PEM",
    )
    assert pod.token is not None and pod.token() == "sa-token"
    (tmp_path / "token").write_text("rotated")
    assert pod.token() == "rotated"
    assert in_cluster(tmp_path, environ | {"KUBERNETES_SERVICE_HOST": "fd00::1"}).server == (
        "https://[fd00::1]:443"
    )
    with pytest.raises(ConfigError, match="FETALMLOPS_DISPATCHER_KUBECONFIG"):
        in_cluster(tmp_path, {})


# --- the service ------------------------------------------------------------------------------


def test_the_dispatcher_service_consumes_requests_in_its_own_group(tmp_path: Path) -> None:
    template = tmp_path / "job.yaml"
    template.write_text(yaml.safe_dump(TEMPLATE))
    own = DispatcherSettings(job_template=template, namespace="training")
    up = api_answering(lambda r: httpx.Response(200, json={"gitVersion": "v1.34.4"}))
    service = build(Settings(), own, EmbeddedBus(), up)
    (consumer,) = service.consumers
    assert (list(consumer.topics), consumer.group) == ([TOPIC], "dispatcher")
    assert TestClient(service.app).get("/readyz").status_code == 200
    down = api_answering(lambda r: status(503, "ServiceUnavailable"))
    failures = TestClient(build(Settings(), own, EmbeddedBus(), down).app).get("/readyz").json()
    assert "kubernetes-api" in failures["failures"]


def test_the_dispatcher_will_not_start_without_template_or_namespace(tmp_path: Path) -> None:
    up = api_answering(lambda r: httpx.Response(200, json={}))
    absent = DispatcherSettings(job_template=tmp_path / "absent.yaml", namespace="t")
    with pytest.raises(SystemExit, match=r"FETALMLOPS_DISPATCHER_JOB_TEMPLATE.*absent\.yaml"):
        build(Settings(), absent, EmbeddedBus(), up)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(TEMPLATE))
    nowhere = DispatcherSettings(job_template=tmp_path / "job.yaml")
    with pytest.raises(SystemExit, match="FETALMLOPS_DISPATCHER_NAMESPACE"):
        build(Settings(), nowhere, EmbeddedBus(), up)


def test_on_kubernetes_the_trainer_service_leaves_requests_to_the_dispatcher(
    tmp_path: Path,
) -> None:
    settings = Settings(store_dir=tmp_path / "objects", database_url=f"sqlite:///{tmp_path}/db")
    groups = [c.group for c in build_trainer(settings, TrainerSettings()).consumers]
    assert groups == ["trainer", "trainer-registry"]
    off = TrainerSettings(run_requests=False)
    assert [c.group for c in build_trainer(settings, off).consumers] == ["trainer-registry"]


# --- the Job's side ---------------------------------------------------------------------------


@pytest.fixture
def tracing() -> Iterator[None]:
    """A recording tracer provider, so spans carry their trace ids."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    yield


def job_consumer(handler: Any) -> Consumer:
    return Consumer([TOPIC], JOB_GROUP, handler, Settings().topics.deadletter)


def test_the_job_reads_back_the_record_the_dispatcher_read() -> None:
    record = record_of(request_event())
    env = env_of(
        job_manifest(TEMPLATE, training_request(record, "m", (("traceparent", TRACEPARENT),)), "t")
    )
    assert request_record(env, "unused") == record
    with pytest.raises(Rejected, match="not set"):
        request_record({}, TOPIC)
    with pytest.raises(Rejected, match="not base64"):
        request_record({dispatch.REQUEST_ENV: "not base64!"}, TOPIC)


def test_a_run_that_succeeds_exits_0_within_the_requests_trace(
    tracing: None, tmp_path: Path
) -> None:
    seen: list[tuple[int, Record]] = []

    def handler(record: Record) -> None:
        seen.append((trace.get_current_span().get_span_context().trace_id, record))

    record = record_of(request_event())
    assert run_request(EmbeddedBus(), job_consumer(handler), record, tmp_path / "log") == 0
    assert seen == [(int(TRACEPARENT.split("-")[1], 16), record)]


def test_a_rejected_request_is_dead_lettered_and_ends_the_job_unretried(tmp_path: Path) -> None:
    def reject(record: Record) -> None:
        raise Rejected("unknown backbone 'alexnet'")

    bus, log = EmbeddedBus(), tmp_path / "termination-log"
    log.touch()
    record = record_of(request_event())
    assert run_request(bus, job_consumer(reject), record, log) == REJECTED_EXIT
    (letter,) = deadletters(bus)
    assert letter.value == record.value and letter.header(DLQ_GROUP) == JOB_GROUP.encode()
    assert letter.header(DLQ_ERROR) == b"Rejected: unknown backbone 'alexnet'"
    assert log.read_text() == "rejected: Rejected: unknown backbone 'alexnet'"
    down = EmbeddedBus()
    down.close()  # no dead letter possible: the Job retries, to dead-letter it then
    assert run_request(down, job_consumer(reject), record, log) == 1


def test_a_run_that_fails_is_left_to_the_jobs_retries(tmp_path: Path) -> None:
    def crash(record: Record) -> None:
        raise RuntimeError("CUDA out of memory at /data/patient-name.png")

    bus, log = EmbeddedBus(), tmp_path / "termination-log"
    log.touch()
    assert run_request(bus, job_consumer(crash), record_of(request_event()), log) == 1
    assert deadletters(bus) == []
    assert log.read_text().startswith("failed, to be retried: RuntimeError (its message")


def test_the_job_runs_the_request_through_the_trainers_own_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade(url)
    settings = Settings(store_dir=tmp_path / "objects", database_url=url)
    store = LocalStore(settings.store_dir)
    store.ensure_buckets(settings.buckets.all())
    bus = EmbeddedBus(partitions=1)
    platform = Platform(settings, store, bus, create_engine_for(url))
    trainer = Trainer(platform, TrainerSettings(workdir=tmp_path / "work"))
    event = request_event(snapshot_id="snapshot-that-does-not-exist")
    request = training_request(record_of(event), "fetal-planes", (("traceparent", TRACEPARENT),))
    env = env_of(job_manifest(TEMPLATE, request, "training"))

    record = request_record(env, TOPIC)
    consumer = Consumer([TOPIC], JOB_GROUP, trainer.handle, settings.topics.deadletter)
    assert run_request(bus, consumer, record, tmp_path / "absent") == REJECTED_EXIT
    (letter,) = deadletters(bus)
    assert b"no snapshot snapshot-that-does-not-exist" in (letter.header(DLQ_ERROR) or b"")


def test_the_dispatcher_never_imports_torch() -> None:
    import subprocess
    import sys

    probe = "import sys, fetalmlops.trainer.dispatch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
