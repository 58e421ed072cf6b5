"""The dispatcher: on Kubernetes each training request becomes one Job, so no long-lived pod trains.

`fetalmlops run dispatcher` (in the image, `python -m fetalmlops.trainer.dispatch`) consumes
`fetal.training.requested` in a group of its own and, for each request, asks the Kubernetes API
for a Job made from a template (`job_manifest`). The request travels in the Job's environment
as the event's own bytes, and the Job's container (`request_job`) runs it through
`Trainer.handle`, the trainer's consumer's own code. The offset is committed once the API has
stored the Job (in etcd): a crash before that brings the request again, and a request that comes
again finds its Job by name (`job_name`, from the request id): 409 AlreadyExists, nothing to do.

The template (FETALMLOPS_DISPATCHER_JOB_TEMPLATE, rendered by the chart into a ConfigMap) is a
`batch/v1` Job in YAML, e.g.::

    apiVersion: batch/v1
    kind: Job
    metadata:
      labels: {app.kubernetes.io/instance: fetalmlops}   # kept; the dispatcher adds its own
    spec:
      backoffLimit: 2                  # a failed run is retried; it resumes from its checkpoint
      ttlSecondsAfterFinished: 604800  # a week to read a failed run's status and logs
      podFailurePolicy:                # optional; the dispatcher's rule goes first
        rules:
          - {action: Ignore, onPodConditions: [{type: DisruptionTarget}]}
      template:
        spec:
          restartPolicy: Never         # the default; OnFailure is refused (see below)
          serviceAccountName: fetalmlops-trainer
          containers:
            - name: trainer            # this one, or the only one, gets the request
              image: fetalmlops/trainer:0.1.0
              # command defaults to `python -m fetalmlops.trainer.request_job`
              envFrom: [{configMapRef: {name: fetalmlops-trainer}}]  # the trainer's settings

The dispatcher sets `metadata.name` (and drops `generateName`) and `metadata.namespace`; adds
the labels app.kubernetes.io/name=fetalmlops, app.kubernetes.io/component=training,
fetalmlops/request-id and fetalmlops/model to the Job and its pods, and the request id as it is
to the annotation fetalmlops/request-id; gives the container FETALMLOPS_TRAINING_REQUEST (the
event, base64), FETALMLOPS_TRAINING_REQUEST_SOURCE (`topic:partition:offset`) and TRACEPARENT
(and TRACESTATE), so the run's spans continue the request's trace; and puts first in
`spec.podFailurePolicy` a rule that fails the Job at once when that container exits with
`REJECTED_EXIT` (a rejected request: retrying cannot help). That rule needs restartPolicy Never.

Where a request that fails ends up: a bad event on the topic, or one the API refuses (a 4xx but
409 and 429), is dead-lettered here with the reason; with the API unavailable (no answer, 5xx,
429) the request waits uncommitted and is handled again until the API answers (`Unavailable`).
In the Job, a request the trainer rejects is dead-lettered by `request_job` and fails the Job
(reason PodFailurePolicy, the reason in the pod's termination message); a run that fails is
retried up to backoffLimit, then the Job is Failed (BackoffLimitExceeded), its pods' logs
saying why, until ttlSecondsAfterFinished deletes it. `kubectl get jobs -l
app.kubernetes.io/component=training` lists them all.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from prometheus_client import Counter

from fetalmlops.common.bus import (
    Bus,
    Consumer,
    Record,
    Rejected,
    open_bus,
    read_event,
    retry_policy,
)
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.common.telemetry.tracing import inject
from fetalmlops.trainer.kubernetes_api import (
    ApiRefused,
    ConfigError,
    KubernetesApi,
    from_kubeconfig,
    in_cluster,
)
from fetalmlops.trainer.settings import DISPATCHER_NAME, DispatcherSettings, TrainerSettings
from fetalmlops.v1 import training_pb2

log = logging.getLogger(__name__)

REQUEST_ENV = "FETALMLOPS_TRAINING_REQUEST"
SOURCE_ENV = "FETALMLOPS_TRAINING_REQUEST_SOURCE"
# W3C trace context in the environment, as OpenTelemetry's environment-carrier spec names it.
TRACE_ENV = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE"}
# sysexits.h EX_DATAERR, "the input data was incorrect": the request, rejected; never retried.
REJECTED_EXIT = 65
CONTAINER = "trainer"
COMMAND = ["python", "-m", "fetalmlops.trainer.request_job"]
NAME_PREFIX = "train-"
REQUEST_LABEL = "fetalmlops/request-id"
MODEL_LABEL = "fetalmlops/model"
JOB_LABELS = {"app.kubernetes.io/name": "fetalmlops", "app.kubernetes.io/component": "training"}
# RFC 1123 labels (object names) and label values, as the API validates them; both ≤ 63.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
MAX_LABEL = 63
DIGEST_CHARS = 10

JOBS = Counter(
    "fetalmlops_training_jobs_total",
    "Training Jobs asked of the Kubernetes API, by outcome (created, existed, refused).",
    ["outcome"],
)


class TemplateError(ValueError):
    """The Job template cannot carry a training request."""


@dataclass(frozen=True)
class TrainingRequest:
    """A training request on its way to its Job."""

    request_id: str
    model_name: str
    event: bytes  # the TrainingRequested as it was published
    source: str = ""  # topic:partition:offset it was read from
    trace: tuple[tuple[str, str], ...] = ()  # traceparent (and tracestate)


def request_id(event: training_pb2.TrainingRequested) -> str:
    """What names a request: its id, else (a producer that set none) its event's id."""
    return event.request_id or event.meta.event_id


def training_request(
    record: Record, default_model: str, trace: tuple[tuple[str, str], ...] = ()
) -> TrainingRequest:
    """The request ``record`` carries; `UnknownSchema` or `Rejected` when it carries none."""
    event = read_event(record)
    if not isinstance(event, training_pb2.TrainingRequested):
        raise Rejected(f"expected TrainingRequested, got {type(event).__name__}")
    name = request_id(event)
    if not name:
        raise Rejected("a training request without request_id or event id: its Job is named by it")
    return TrainingRequest(
        request_id=name,
        model_name=event.model_name or default_model,
        event=record.value,
        source=f"{record.topic}:{record.partition}:{record.offset}",
        trace=trace,
    )


def job_name(request_id: str) -> str:
    """The Job's name: `train-<request id>` when that is a DNS label, else as much of the id as
    fits, made one, and a digest of the whole id, so that two ids never share a Job."""
    readable = NAME_PREFIX + request_id
    if len(readable) <= MAX_LABEL and DNS_LABEL.fullmatch(readable):
        return readable
    room = MAX_LABEL - len(NAME_PREFIX) - DIGEST_CHARS - 1
    slug = re.sub(r"[^a-z0-9]+", "-", request_id.lower()).strip("-")[:room].rstrip("-")
    return f"{NAME_PREFIX}{slug + '-' if slug else ''}{_digest(request_id)}"


def label_value(text: str) -> str:
    """``text`` as a label value: as it is when valid, else its valid part and a digest."""
    if len(text) <= MAX_LABEL and LABEL_VALUE.fullmatch(text):
        return text
    room = MAX_LABEL - DIGEST_CHARS - 1
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:room].strip("-_.")
    return f"{slug + '-' if slug else ''}{_digest(text)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def request_env(request: TrainingRequest) -> list[dict[str, str]]:
    """The environment that carries ``request`` into its Job (read by `request_job`)."""
    env = [
        {"name": REQUEST_ENV, "value": base64.b64encode(request.event).decode()},
        {"name": SOURCE_ENV, "value": request.source},
    ]
    return env + [
        {"name": TRACE_ENV[key], "value": value} for key, value in request.trace if key in TRACE_ENV
    ]


def rejected_rule(container: str) -> dict[str, Any]:
    """The podFailurePolicy rule that ends the Job, unretried, when ``container`` rejects."""
    return {
        "action": "FailJob",
        "onExitCodes": {"containerName": container, "operator": "In", "values": [REJECTED_EXIT]},
    }


def job_manifest(
    template: Mapping[str, Any], request: TrainingRequest, namespace: str
) -> dict[str, Any]:
    """The Job ``template`` becomes for ``request`` in ``namespace`` (the module says how);
    `TemplateError` when the template cannot carry it. ``template`` itself is not changed."""
    job = copy.deepcopy(dict(template))
    if (job.get("apiVersion", "batch/v1"), job.get("kind", "Job")) != ("batch/v1", "Job"):
        raise TemplateError(
            f"the Job template must be a batch/v1 Job, not {job.get('apiVersion')} "
            f"{job.get('kind')}"
        )
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    labels = JOB_LABELS | {
        REQUEST_LABEL: label_value(request.request_id),
        MODEL_LABEL: label_value(request.model_name),
    }
    metadata = _section(job, "metadata", "metadata")
    metadata.pop("generateName", None)
    metadata["name"], metadata["namespace"] = job_name(request.request_id), namespace
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        REQUEST_LABEL: request.request_id,
    }
    spec = _section(job, "spec", "spec")
    pod = _section(spec, "template", "spec.template")
    pod_metadata = _section(pod, "metadata", "spec.template.metadata")
    pod_metadata["labels"] = {**(pod_metadata.get("labels") or {}), **labels}
    pod_spec = _section(pod, "spec", "spec.template.spec")
    restart = pod_spec.setdefault("restartPolicy", "Never")
    if restart != "Never":
        raise TemplateError(
            f"the Job template's restartPolicy is {restart}: it must be Never, so that a "
            "rejected request fails the Job (podFailurePolicy) instead of restarting in place"
        )
    container = _container(pod_spec)
    if not container.get("command") and not container.get("args"):
        container["command"] = list(COMMAND)
    ours = request_env(request)
    names = {variable["name"] for variable in ours}
    kept = [v for v in container.get("env") or [] if v.get("name") not in names]
    container["env"] = kept + ours
    policy = _section(spec, "podFailurePolicy", "spec.podFailurePolicy")
    rules = policy.setdefault("rules", [])
    rule = rejected_rule(container["name"])
    if rule not in rules:
        rules.insert(0, rule)
    return job


def _section(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise TemplateError(f"the Job template's {path} must be a mapping")
    return value


def _container(pod_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The container that runs the request: the one named `trainer`, or the only one."""
    containers: list[dict[str, Any]] = pod_spec.get("containers") or []
    if not isinstance(containers, list) or not containers:
        raise TemplateError(
            "the Job template has no container to run the request in "
            "(spec.template.spec.containers is empty)"
        )
    if not all(isinstance(c, dict) and c.get("name") for c in containers):
        raise TemplateError("every container of the Job template needs a name")
    named = [c for c in containers if c["name"] == CONTAINER]
    if named:
        return named[0]
    if len(containers) == 1:
        return containers[0]
    raise TemplateError(
        f"the Job template has {len(containers)} containers and none named {CONTAINER!r}: "
        "name the one that trains so"
    )


# What `load_template` checks a template with, before any request comes.
PROBE = TrainingRequest("probe", "probe", b"", "probe:0:0", (("traceparent", "probe"),))


def load_template(path: Path) -> dict[str, Any]:
    """The Job template at ``path``, checked; `TemplateError` with the reason otherwise."""
    try:
        template = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TemplateError(f"the Job template {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"the Job template {path} is not YAML: {exc}") from None
    if not isinstance(template, dict):
        raise TemplateError(f"the Job template {path} is not a mapping (a batch/v1 Job)")
    job_manifest(template, PROBE, "probe")
    return template


class JobsApi(Protocol):
    def create_job(self, namespace: str, job: Mapping[str, Any]) -> bool:
        """True once the API stored ``job``, False when a Job of its name exists."""


@dataclass
class Dispatcher:
    api: JobsApi
    template: Mapping[str, Any]
    namespace: str
    default_model: str  # the model a request that names none trains (the trainer's)

    def handle(self, record: Record) -> None:
        # The consumer's span, within the request's trace: the run's spans follow this one.
        trace = tuple((key, value.decode()) for key, value in inject())
        request = training_request(record, self.default_model, trace)
        job = job_manifest(self.template, request, self.namespace)
        try:
            created = self.api.create_job(self.namespace, job)
        except ApiRefused as exc:
            JOBS.labels("refused").inc()
            raise Rejected(f"the Kubernetes API refused the training Job: {exc}") from None
        JOBS.labels("created" if created else "existed").inc()
        log.info(
            "training job created" if created else "training job exists already",
            extra={"job": job["metadata"]["name"], "namespace": self.namespace},
        )


def kubernetes_api(own: DispatcherSettings) -> KubernetesApi:
    """The API the settings name: a kubeconfig's, else the pod's own (in-cluster)."""
    if own.kubeconfig is not None:
        credentials = from_kubeconfig(own.kubeconfig, own.context)
    else:
        credentials = in_cluster()
    return KubernetesApi(credentials, own.api_timeout_s)


def build(
    settings: Settings,
    own: DispatcherSettings | None = None,
    bus: Bus | None = None,
    api: KubernetesApi | None = None,
) -> Service:
    """The service on ``bus`` and ``api`` (default: those the settings configure); SystemExit
    with the reason when the template, the credentials or the namespace are wanting."""
    own = own or DispatcherSettings()
    try:
        template = load_template(own.job_template)
        api = api or kubernetes_api(own)
    except TemplateError as exc:
        raise SystemExit(f"FETALMLOPS_DISPATCHER_JOB_TEMPLATE: {exc}") from None
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    namespace = own.namespace or api.credentials.namespace
    if not namespace:
        raise SystemExit(
            "no namespace for the training Jobs: set FETALMLOPS_DISPATCHER_NAMESPACE "
            "(no kubeconfig context or service account names one)"
        )
    bus = bus or open_bus(settings)
    app = create_app("FetalMLOps dispatcher", {"kubernetes-api": api.version})
    dispatcher = Dispatcher(api, template, namespace, TrainerSettings().model_name)
    topics = settings.topics
    consumer = Consumer(
        [topics.training_requested], DISPATCHER_NAME, dispatcher.handle, topics.deadletter,
        retry_policy(settings),
    )  # fmt: skip
    return Service(settings, app, bus=bus, consumers=[consumer])


def main() -> None:
    run(build(Settings(service_name=DISPATCHER_NAME)))


if __name__ == "__main__":
    main()
