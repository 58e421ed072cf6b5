"""The dispatcher against a real Kubernetes API server: the one `fetalmlops cluster up` runs.

Each request becomes one Job, stored by the API with its labels, the request and its trace in
the environment; a second create of the same request is a no-op (409); and a service account
with only the dispatcher's Role can create Jobs and nothing else. On the session's cluster
(`conftest.py`); what a test makes lives in a namespace of its own, deleted at the end; its Jobs
are suspended, so no pod runs.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml

from fetalmlops.cluster.layout import Layout
from fetalmlops.common.bus import Consumer, EmbeddedBus, Record, Rejected, RetryPolicy, handle
from fetalmlops.common.events import SCHEMA_HEADER, schema_name
from fetalmlops.common.settings import Settings
from fetalmlops.trainer.dispatch import (
    REJECTED_EXIT,
    REQUEST_ENV,
    SOURCE_ENV,
    Dispatcher,
    build,
    job_name,
)
from fetalmlops.trainer.kubernetes_api import (
    ApiRefused,
    KubernetesApi,
    from_kubeconfig,
    in_cluster,
)
from fetalmlops.trainer.settings import DispatcherSettings
from fetalmlops.v1 import training_pb2

pytestmark = pytest.mark.cluster

TOPIC = Settings().topics.training_requested
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Suspended: the API stores and validates it, the controller starts no pod.
TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "spec": {
        "suspend": True,
        "backoffLimit": 1,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": "localhost/pause:local",
                        "imagePullPolicy": "Never",
                    }
                ]
            }
        },
    },
}
JOBS_ONLY = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]
RBAC = "/apis/rbac.authorization.k8s.io/v1/namespaces"


@pytest.fixture(scope="module")
def admin(running_cluster: Layout) -> Iterator[KubernetesApi]:
    api = KubernetesApi(from_kubeconfig(running_cluster.admin_kubeconfig), timeout_s=10)
    yield api
    api.close()


@pytest.fixture
def namespace(admin: KubernetesApi) -> Iterator[str]:
    name = f"fetalmlops-dispatch-{uuid.uuid4().hex[:8]}"
    admin.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    admin.call("DELETE", f"/api/v1/namespaces/{name}")  # its Jobs, Role and account with it


def request_record(offset: int = 0) -> Record:
    event = training_pb2.TrainingRequested(
        request_id=str(uuid.uuid4()), model_name="planes-portable", backbone="tiny"
    )
    headers = ((SCHEMA_HEADER, schema_name(event).encode()), ("traceparent", TRACEPARENT.encode()))
    return Record(TOPIC, 0, offset, event.request_id, event.SerializeToString(), headers)


def jobs(api: KubernetesApi, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = api.call(
        "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector={quote(selector)}"
    )
    items: list[dict[str, Any]] = found["items"]
    return items


def consumed(dispatcher: Dispatcher, record: Record) -> list[Record]:
    """The consumer loop's step on ``record``; what it dead-lettered."""
    bus = EmbeddedBus()
    deadletter = Settings().topics.deadletter
    handle(
        bus,
        Consumer([TOPIC], "dispatcher", dispatcher.handle, deadletter, RetryPolicy(3, 0.1)),
        record,
    )
    subscription = bus.subscribe([deadletter], "test")
    letters = subscription.poll(0.2)
    subscription.close()
    return letters


def test_a_request_becomes_one_job_and_a_replay_is_a_no_op(
    admin: KubernetesApi, namespace: str
) -> None:
    record = request_record(offset=41)
    dispatcher = Dispatcher(admin, TEMPLATE, namespace, "fetal-planes")

    assert consumed(dispatcher, record) == []
    assert consumed(dispatcher, record) == []  # redelivered: 409 AlreadyExists, nothing to do

    assert record.key is not None
    (job,) = jobs(admin, namespace, f"fetalmlops/request-id={record.key}")
    assert job["metadata"]["name"] == job_name(record.key)
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "fetalmlops"
    assert labels["app.kubernetes.io/component"] == "training"
    assert labels["fetalmlops/model"] == "planes-portable"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert base64.b64decode(env[REQUEST_ENV]) == record.value
    assert env[SOURCE_ENV] == f"{TOPIC}:0:41"
    assert env["TRACEPARENT"].split("-")[1] == TRACEPARENT.split("-")[1]  # the request's trace
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [REJECTED_EXIT]
    assert job["spec"]["template"]["metadata"]["labels"]["fetalmlops/request-id"] == record.key


def test_the_dispatchers_account_creates_jobs_and_nothing_else(
    admin: KubernetesApi, namespace: str, tmp_path: Path
) -> None:
    account = "fetalmlops-dispatcher"
    admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
    )
    admin.create(
        f"{RBAC}/{namespace}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": account},
            "rules": JOBS_ONLY,
        },
    )
    admin.create(
        f"{RBAC}/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )
    token_request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    issued = admin.call(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", token_request
    )
    token = issued["status"]["token"]

    # The pod's view: token, CA and namespace where the kubelet mounts them, the API by address.
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(token)
    (mount / "ca.crt").write_text(admin.credentials.ca_pem or "")
    (mount / "namespace").write_text(namespace)
    server = urlsplit(admin.credentials.server)
    environ = {
        "KUBERNETES_SERVICE_HOST": server.hostname or "",
        "KUBERNETES_SERVICE_PORT": str(server.port),
    }
    pod = KubernetesApi(in_cluster(mount, environ))
    wait_until_allowed(pod, namespace)

    template = tmp_path / "job-template.yaml"
    template.write_text(yaml.safe_dump(TEMPLATE))
    service = build(Settings(), DispatcherSettings(job_template=template), EmbeddedBus(), pod)
    (consumer,) = service.consumers
    record = request_record()
    consumer.handler(record)  # the namespace from the account's own file
    assert record.key is not None
    assert [j["metadata"]["name"] for j in jobs(admin, namespace, "fetalmlops/model")] == [
        job_name(record.key)
    ]

    with pytest.raises(ApiRefused) as secrets:
        pod.call("GET", f"/api/v1/namespaces/{namespace}/secrets")
    assert secrets.value.status == 403
    with pytest.raises(ApiRefused) as listing:
        pod.call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    assert listing.value.status == 403
    elsewhere = request_record()
    with pytest.raises(Rejected, match="403 Forbidden") as refused:
        Dispatcher(pod, TEMPLATE, "default", "fetal-planes").handle(elsewhere)
    assert elsewhere.key is not None and elsewhere.key not in str(refused.value)
    pod.close()


def wait_until_allowed(api: KubernetesApi, namespace: str, timeout_s: float = 20.0) -> None:
    """Until the RBAC authorizer's cache has the new binding (it follows the API, not at once)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace, "verb": "create", "group": "batch", "resource": "jobs",
            }
        },
    }  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not api.call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)[
        "status"
    ].get("allowed"):
        if time.monotonic() > deadline:
            pytest.fail(f"the dispatcher's Role did not allow creating Jobs within {timeout_s}s")
        time.sleep(0.5)
