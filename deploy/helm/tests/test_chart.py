"""The chart, as a platform team would check it before installing: it lints, every object it
renders (with the default values and with each values file) is valid against Kubernetes 1.34's
and KServe's own schemas, strictly, and it keeps the promises its README makes: no secret in
the render, non-root read-only containers, a dispatcher that may touch Jobs and Pods and nothing
else, one process that trains each request (the dispatcher's Jobs, or else the trainer), a
default deny, a schema that refuses what it does not know, a values table that is the generated
one.

Helm and kubeconform are the project's pinned builds (`fetalmlops.cluster.tools`); the schemas
are generated offline by `deploy/helm/k8s_schemas.py` into the cache.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from fetalmlops.cluster.tools import HELM, KUBECONFORM

HELM_DIR = Path(__file__).resolve().parents[1]
CHART = HELM_DIR / "fetalmlops"
VALUES_FILES = sorted((HELM_DIR / "values").glob("*.yaml"))
CACHE = Path.home() / ".cache" / "fetalmlops"
KUBERNETES_VERSION = "1.34.4"
RELEASE, NAMESPACE = "fetalmlops", "fetalmlops"
# Every optional object switched on, so that kubeconform sees each template at least once.
EVERYTHING = [
    "--set", "observability.serviceMonitor.enabled=true",
    "--set", "observability.serviceMonitor.additionalLabels.release=kube-prometheus-stack",
    "--set", "observability.prometheusRule.enabled=true",
    "--set", "observability.prometheusRule.serverErrors.enabled=true",
    "--set", "observability.grafanaDashboard.enabled=true",
    "--set", "observability.otlp.endpoint=http://otel-collector.observability:4318/v1/traces",
    "--set", "observability.otlp.cidrs={10.0.0.0/8}",
    "--set", "training.schedule.enabled=true",
    "--set", "training.schedule.timeZone=Europe/Paris",
    "--set", "training.job.workdir.existingClaim=trainer-workdir",
    "--set", "ingest.autoscaling.enabled=true",
    "--set", "anonymizer.autoscaling.enabled=true",
    "--set", "ingest.service.type=NodePort",
    "--set", "ingest.service.nodePorts.dicom=31112",
    "--set", "training.dispatcher.networkPolicy.allowHttp=true",
    "--set", "training.trainer.networkPolicy.from[0].podSelector.matchLabels.app=pipelines",
    "--set-file", f"changeControl.plan={HELM_DIR.parents[1] / 'deploy/change-control/plan.yaml'}",
]  # fmt: skip
# No dispatcher: the trainer service trains each request in its own pod.
IN_PROCESS = [
    "--set",
    "training.dispatcher.enabled=false",
    "--set",
    "training.schedule.enabled=true",
]
CASES = {"default": [], "everything": EVERYTHING, "in-process": IN_PROCESS} | {
    f.stem: ["-f", str(f)] for f in VALUES_FILES
}

pytestmark = pytest.mark.needs("go")  # builds Helm and kubeconform, fetches the schemas


def load(name: str) -> ModuleType:
    """A script beside the chart (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, HELM_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


values_table = load("values_table")
k8s_schemas = load("k8s_schemas")


@cache
def helm() -> Path:
    return HELM.ensure(CACHE)


@cache
def kubeconform() -> Path:
    return KUBECONFORM.ensure(CACHE)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, check=False, timeout=120
    )


@cache
def rendered(case: str) -> str:
    done = run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--kube-version", KUBERNETES_VERSION, *CASES[case],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(case: str = "default") -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(rendered(case)) if o]


def of_kind(kind: str, case: str = "default") -> list[dict[str, Any]]:
    return [o for o in objects(case) if o["kind"] == kind]


def named(kind: str, name: str, case: str = "default") -> dict[str, Any]:
    (found,) = [o for o in of_kind(kind, case) if o["metadata"]["name"] == name]
    return found


def job_template(case: str = "default") -> dict[str, Any]:
    config_map = named("ConfigMap", f"{RELEASE}-training-job-template", case)
    template: dict[str, Any] = yaml.safe_load(config_map["data"]["job-template.yaml"])
    return template


def dispatches(case: str) -> bool:
    """The case renders the dispatcher, and with it the training Job's template."""
    return any(
        o["metadata"]["name"] == f"{RELEASE}-training-job-template"
        for o in of_kind("ConfigMap", case)
    )


def pod_specs(case: str = "default") -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of everything that makes pods, the training Job's template included."""
    for o in objects(case):
        spec = o.get("spec", {})
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], spec["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield o["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] == "InferenceService":
            predictor = spec["predictor"]
            pod = {**predictor, "containers": [predictor["model"]]}
            yield o["metadata"]["name"], pod
        elif o["kind"] == "ServingRuntime":
            yield o["metadata"]["name"], {"containers": spec["containers"]}
    if dispatches(case):
        yield "training job template", job_template(case)["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---------------------------------------------------------------------------------------------
# Lint, render, validate


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint(case: str) -> None:
    done = run_helm(
        "lint", "--strict", str(CHART), "--kube-version", KUBERNETES_VERSION, *CASES[case]
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kserve", ["shared", "module"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kubeconform_strict(case: str, kserve: str, tmp_path: Path) -> None:
    """Every object, and the Job the dispatcher will create, against Kubernetes 1.34's own
    OpenAPI document and the KServe CRDs (../shared/crds, and the 0.16 release the local
    cluster runs), refusing unknown fields; nothing is skipped for want of a schema."""
    locations = k8s_schemas.ensure(CACHE, kserve)
    jobs = [job_template(case)] if dispatches(case) else []
    for job in jobs:
        job["metadata"]["name"] = "fetalmlops-train-0123456789ab"  # the dispatcher names it
    manifests = tmp_path / "render.yaml"
    manifests.write_text("\n---\n".join([rendered(case), *map(yaml.safe_dump, jobs)]))
    done = subprocess.run(
        [
            str(kubeconform()), "-strict", "-summary", "-output", "json",
            "-kubernetes-version", KUBERNETES_VERSION, *locations.flags(), str(manifests),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0, json.dumps(report["resources"], indent=1)
    summary = report["summary"]
    assert summary["invalid"] == summary["errors"] == summary["skipped"] == 0, summary
    assert summary["valid"] == len(objects(case)) + len(jobs)


# ---------------------------------------------------------------------------------------------
# What the README promises


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_secret_in_the_render(case: str) -> None:
    assert not of_kind("Secret", case)
    for o in objects(case):
        assert "stringData" not in o and not (o["kind"] == "Secret" and o.get("data"))
    # Credentials reach the containers only by reference.
    for name, pod in pod_specs(case):
        for container in pod["containers"]:
            for variable in container.get("env", []):
                assert not any(
                    word in variable["name"]
                    for word in ("TOKENS", "SECRET_KEY", "ACCESS_KEY", "PASSWORD", "DATABASE_URL")
                ), (name, variable["name"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_container_is_non_root_on_a_read_only_root(case: str) -> None:
    specs = dict(pod_specs(case))
    assert {f"{RELEASE}-ingest", f"{RELEASE}-trainer", "fetal-planes"} <= set(specs)
    assert (f"{RELEASE}-training-dispatcher" in specs) is dispatches(case)
    for name, pod in specs.items():
        pod_context = pod.get("securityContext", {})
        if "securityContext" in pod:  # a ServingRuntime has no pod of its own
            assert pod_context["runAsNonRoot"] is True, name
            assert pod_context["runAsUser"] == 10001, name
            assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
            assert tmp and "emptyDir" in tmp[0], name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            if "securityContext" in pod:
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert mounts["/tmp"] == "tmp", name


def test_the_dispatcher_may_touch_jobs_and_pods_in_its_namespace_and_nothing_else() -> None:
    assert not of_kind("ClusterRole") and not of_kind("ClusterRoleBinding")
    (role,) = of_kind("Role")
    assert sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"])))
        for r in role["rules"]
    ) == [
        (("",), ("pods",), ("get", "list", "watch")),
        (("",), ("pods/log",), ("get",)),
        (("batch",), ("jobs",), ("create", "delete", "get", "list", "watch")),
    ]
    (binding,) = of_kind("RoleBinding")
    dispatcher = f"{RELEASE}-training-dispatcher"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]
    }  # fmt: skip
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": dispatcher, "namespace": NAMESPACE}
    ]
    # Only the dispatcher's pods carry an API token.
    for name, pod in pod_specs():
        if "securityContext" in pod:
            assert pod.get("automountServiceAccountToken") is (name == dispatcher), name
    for account in of_kind("ServiceAccount"):
        expected = account["metadata"]["name"] == dispatcher
        assert account["automountServiceAccountToken"] is expected


def test_the_dispatcher_reads_the_job_template_the_values_describe() -> None:
    deployment = named("Deployment", f"{RELEASE}-training-dispatcher")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["fetalmlops", "run", "dispatcher"]
    assert container["image"] == "ghcr.io/fetalmlops/trainer:0.1.0"
    path = env_of(container)["FETALMLOPS_DISPATCHER_JOB_TEMPLATE"]
    assert path == "/etc/fetalmlops/job-template.yaml"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == f"{RELEASE}-training-job-template"
    assert mount["subPath"] == "job-template.yaml"
    job = job_template()
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == NAMESPACE
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    (trainer,) = job["spec"]["template"]["spec"]["containers"]
    assert trainer["command"] == ["fetalmlops", "train-request"]  # the request from its env
    assert "nvidia.com/gpu" not in trainer["resources"]["limits"]
    assert trainer["envFrom"] == [{"secretRef": {"name": "fetalmlops-trainer-credentials"}}]


def trainer(case: str = "default") -> tuple[dict[str, Any], dict[str, Any]]:
    """The trainer Deployment's pod spec and container."""
    pod = named("Deployment", f"{RELEASE}-trainer", case)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_the_trainer_keeps_the_registry_and_leaves_training_to_the_dispatcher() -> None:
    pod, container = trainer()
    assert "command" not in container  # the image's entry point: python -m fetalmlops.trainer
    assert container["image"] == "ghcr.io/fetalmlops/trainer:0.1.0"
    assert container["envFrom"] == [{"secretRef": {"name": "fetalmlops-trainer-credentials"}}]
    env = env_of(container)
    assert env["FETALMLOPS_TRAINER_RUN_REQUESTS"] == "false"
    assert env["FETALMLOPS_SERVICE_NAME"] == "trainer"
    assert "FETALMLOPS_TRAINER_WORKDIR" not in env
    assert "FETALMLOPS_KAFKA_MAX_POLL_INTERVAL_MS" not in env
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}
    assert pod["automountServiceAccountToken"] is False
    service = named("Service", f"{RELEASE}-trainer")
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 8080, "http")
    ]
    budget = named("PodDisruptionBudget", f"{RELEASE}-trainer")
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "trainer"
    assert named("ServiceAccount", f"{RELEASE}-trainer")["automountServiceAccountToken"] is False


def test_without_the_dispatcher_the_trainer_trains_in_its_pod() -> None:
    assert not [
        o for o in objects("in-process") if o["metadata"]["name"].startswith(f"{RELEASE}-training-")
        and o["kind"] in ("Deployment", "ConfigMap", "Role", "RoleBinding")
    ]  # fmt: skip
    pod, container = trainer("in-process")
    env = env_of(container)
    assert env["FETALMLOPS_TRAINER_RUN_REQUESTS"] == "true"
    # A run holds its message for as long as a Job could run; the group must not move it.
    assert env["FETALMLOPS_KAFKA_MAX_POLL_INTERVAL_MS"] == str(86400 * 1000)
    workdir = env["FETALMLOPS_TRAINER_WORKDIR"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == workdir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"] == {"sizeLimit": "20Gi"}
    # Nothing a values file says makes the trainer train beside the dispatcher's Jobs.
    for case in CASES:
        expected = "true" if case == "in-process" else "false"
        assert env_of(trainer(case)[1])["FETALMLOPS_TRAINER_RUN_REQUESTS"] == expected, case


def test_the_trainers_api_is_open_to_its_clients_and_the_scrapers() -> None:
    policy = named("NetworkPolicy", f"{RELEASE}-trainer", "everything")["spec"]
    metrics, api = policy["ingress"]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert api == {
        "ports": [{"protocol": "TCP", "port": "http"}],
        "from": [{"podSelector": {"matchLabels": {"app": "pipelines"}}}],
    }
    assert {p["port"] for r in policy["egress"] for p in r["ports"]} == {53, 9092, 9000, 5432, 4318}


def test_the_schedule_publishes_one_request_per_slot() -> None:
    (cron,) = of_kind("CronJob", "everything")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command == ["python", "-m", "fetalmlops.trainer.request"]
    assert importlib.util.find_spec(command[2]) is not None, "the command's module exists"
    assert container["args"] == ["--key", "$(K8S_JOB_NAME)"]
    # The CronJob controller names each Job after its scheduled time; the Job controller puts
    # that name on its pods, retried ones included.
    assert env_of(container)["K8S_JOB_NAME"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}
    }
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_gpu_training_asks_for_gpu_nodes() -> None:
    spec = job_template("gpu-training")["spec"]
    pod = spec["template"]["spec"]
    (trainer,) = pod["containers"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert spec["activeDeadlineSeconds"] == 43200


@pytest.mark.parametrize("case", ["default", "everything", "in-process"])
def test_network_policies_deny_by_default_and_cover_every_pod(case: str) -> None:
    policies = of_kind("NetworkPolicy", case)
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selected = [p["spec"]["podSelector"]["matchLabels"] for p in policies if p is not deny]
    workloads = dict(pod_labels_by_workload(case))
    assert f"{RELEASE}-trainer" in workloads
    for name, pod_labels in workloads.items():
        assert any(labels.items() <= pod_labels.items() for labels in selected), name


def test_local_cluster_policies_name_the_node_address() -> None:
    dispatcher = named("NetworkPolicy", f"{RELEASE}-training-dispatcher", "local-cluster")
    rules = dispatcher["spec"]["egress"]
    by_port = {p["port"]: r.get("to") for r in rules for p in r["ports"]}
    for port in (19094, 19000, 15432, 6443):
        assert by_port[port] == [{"ipBlock": {"cidr": "10.250.0.1/32"}}], port
    for component in ("ingest", "trainer"):
        policy = named("NetworkPolicy", f"{RELEASE}-{component}", "local-cluster")
        ports = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
        assert {19094, 19000, 15432} <= ports and 6443 not in ports, component


def pod_labels_by_workload(case: str = "default") -> Iterator[tuple[str, dict[str, str]]]:
    for o in objects(case):
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"]
        elif o["kind"] == "CronJob":
            template = o["spec"]["jobTemplate"]["spec"]["template"]
            yield o["metadata"]["name"], template["metadata"]["labels"]
        elif o["kind"] == "InferenceService":
            name = o["metadata"]["name"]
            yield name, {"serving.kserve.io/inferenceservice": name}
    if dispatches(case):
        yield "training job", job_template(case)["spec"]["template"]["metadata"]["labels"]


def test_services_have_probes_ports_and_their_platform() -> None:
    for deployment in of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = env_of(container)
        assert env["FETALMLOPS_BUS"] == "kafka" and env["FETALMLOPS_STORE"] == "minio"
        assert env["FETALMLOPS_HTTP_HOST"] == "0.0.0.0"
        names = [e["name"] for e in container["env"]]
        # $(K8S_…) expands only for variables defined before it.
        assert names.index("OTEL_RESOURCE_ATTRIBUTES") > names.index("K8S_NODE_NAME")
        assert env["OTEL_RESOURCE_ATTRIBUTES"].startswith(
            "k8s.namespace.name=$(K8S_NAMESPACE_NAME),k8s.pod.name=$(K8S_POD_NAME),"
            "k8s.node.name=$(K8S_NODE_NAME),"
        )
        assert env["K8S_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    ingest = named("Deployment", f"{RELEASE}-ingest")["spec"]["template"]["spec"]
    (container,) = ingest["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": 8080, "dicom": 11112
    }  # fmt: skip
    assert env_of(container)["FETALMLOPS_INGEST_SCP_PORT"] == "11112"
    assert env_of(container)["FETALMLOPS_INGEST_CALLING_AE_TITLES"] == '["FETAL_PACS"]'
    service = named("Service", f"{RELEASE}-ingest")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http", "dicom": "dicom"
    }  # fmt: skip


def test_the_otlp_endpoint_and_attributes_reach_every_process() -> None:
    for name, pod in pod_specs("everything"):
        for container in pod["containers"]:
            if (
                "FETALMLOPS_SERVICE_NAME" not in env_of(container)
                or name == f"{RELEASE}-migrations"
            ):
                continue
            env = env_of(container)
            assert (
                env["FETALMLOPS_OTLP_ENDPOINT"]
                == "http://otel-collector.observability:4318/v1/traces"
            )
            assert env["OTEL_RESOURCE_ATTRIBUTES"].endswith("service.namespace=fetalmlops")


def test_the_inference_service_runs_on_the_projects_runtime() -> None:
    (isvc,) = of_kind("InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    (runtime,) = of_kind("ServingRuntime")
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {
        f["name"] for f in runtime["spec"]["supportedModelFormats"]
    }
    assert model["storageUri"] == "s3://fetal-models/fetal-planes/v1/"
    assert runtime["spec"]["protocolVersions"] == ["v1", "v2"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert env_of(container)["FETALMLOPS_INFERENCE_MODEL_URI"] == "/mnt/models"
    assert container["ports"][0]["name"] == "http"  # the predictor Service's port name
    account = named("ServiceAccount", predictor["serviceAccountName"])
    assert account["secrets"] == [{"name": "fetalmlops-inference-storage"}]
    annotations = account["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "minio.minio.svc:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"


def test_torchserve_compat_uses_the_stock_runtime() -> None:
    (isvc,) = of_kind("InferenceService", "torchserve-compat")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-torchserve" and model["modelFormat"] == {"name": "pytorch"}
    assert model["protocolVersion"] == "v2"
    assert "envFrom" not in model
    assert not of_kind("ServingRuntime", "torchserve-compat")
    monitors = {m["metadata"]["name"] for m in of_kind("ServiceMonitor", "everything")}
    assert f"{RELEASE}-inference" in monitors


def test_local_cluster_values_point_at_the_node_address() -> None:
    for name, pod in pod_specs("local-cluster"):
        for container in pod["containers"]:
            if "image" not in container:
                continue  # the InferenceService's comes from its ServingRuntime
            assert container["image"].startswith("localhost/fetalmlops/"), name
            assert container["image"].endswith(":0.1.0"), name
            assert container["imagePullPolicy"] == "Never", name
    ingest = named("Deployment", f"{RELEASE}-ingest", "local-cluster")
    env = env_of(ingest["spec"]["template"]["spec"]["containers"][0])
    assert env["FETALMLOPS_KAFKA_BOOTSTRAP_SERVERS"] == "10.250.0.1:19094"
    assert env["FETALMLOPS_MINIO_ENDPOINT"] == "10.250.0.1:19000"


def test_migrations_run_as_a_hook_before_install_and_upgrade() -> None:
    job = named("Job", f"{RELEASE}-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fetalmlops", "db", "upgrade"]
    assert container["envFrom"] == [{"secretRef": {"name": "fetalmlops-migrations-credentials"}}]
    account = named("ServiceAccount", f"{RELEASE}-migrations")
    assert account["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"


def test_the_change_control_plan_reaches_the_monitor_and_the_jobs() -> None:
    monitor = named("Deployment", f"{RELEASE}-monitor", "everything")
    (container,) = monitor["spec"]["template"]["spec"]["containers"]
    path = env_of(container)["FETALMLOPS_MONITOR_PLAN"]
    assert path == "/etc/fetalmlops/change-control/plan.yaml"
    (job,) = job_template("everything")["spec"]["template"]["spec"]["containers"]
    assert env_of(job)["FETALMLOPS_TRAINER_PLAN"] == path
    pod, service = trainer("everything")
    assert env_of(service)["FETALMLOPS_TRAINER_PLAN"] == path
    (mount,) = [m for m in service["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == f"{RELEASE}-change-control"
    config_map = named("ConfigMap", f"{RELEASE}-change-control", "everything")
    assert yaml.safe_load(config_map["data"]["plan.yaml"])["model"] == "fetal-planes"
    assert "FETALMLOPS_MONITOR_PLAN" not in env_of(
        named("Deployment", f"{RELEASE}-monitor")["spec"]["template"]["spec"]["containers"][0]
    )


def test_observability_objects() -> None:
    monitors = of_kind("ServiceMonitor", "everything")
    assert {m["metadata"]["name"] for m in monitors} == {
        f"{RELEASE}-{c}"
        for c in ("ingest", "anonymizer", "monitor", "trainer", "training-dispatcher", "inference")
    }
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert m["spec"]["endpoints"][0]["path"] == "/metrics"
    (rule,) = of_kind("PrometheusRule", "everything")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "fetalmlops_drift_alarm" in alerts["FetalPlaneDrift"]
    assert "kafka_consumergroup_lag" in alerts["FetalConsumerLagHigh"]
    assert "fetalmlops_inference_request_seconds_bucket" in alerts["FetalInferenceLatencyHigh"]
    assert 'status=~"5.."' in alerts["FetalHttpServerErrors"]
    assert "{{ $labels.segment }}" in json.dumps(rule)  # Prometheus's template, not Helm's
    (dashboard,) = [
        c for c in of_kind("ConfigMap", "everything") if c["metadata"]["name"].endswith("dashboard")
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["fetalmlops.json"])["uid"] == "fetalmlops"
    for kind in ("ServiceMonitor", "PrometheusRule", "CronJob", "HorizontalPodAutoscaler"):
        assert not of_kind(kind), kind  # all off by default


def test_the_metric_names_in_the_rules_are_exported_by_the_services() -> None:
    """The alerts and the dashboard query metrics some service declares (or Kafka's exporter)."""
    repo = HELM_DIR.parents[1]
    declared = "\n".join(
        p.read_text()
        for pattern in ("services/*/src/**/*.py", "libs/common/src/**/*.py")
        for p in repo.glob(pattern)
    )
    text = rendered("everything")
    used = set(re.findall(r"\b(fetalmlops_[a-z0-9_]+)", text)) - {"fetalmlops_http_responses_total"}
    for metric in used:
        base = re.sub(r"_(total|bucket|count|sum)$", "", metric)
        assert f'"{base}' in declared or f'"{metric}' in declared, metric


# ---------------------------------------------------------------------------------------------
# The values: schema and documentation


@pytest.mark.parametrize(
    "flag",
    [
        "bogus=1",
        "ingest.bogus=1",
        "inference.model.bogus=1",
        "training.job.workdir.bogus=1",
        "observability.prometheusRule.consumerLag.bogus=1",
        "inference.runtime=triton",
        "image.pullPolicy=Sometimes",
    ],
)
def test_the_schema_refuses_what_it_does_not_know(flag: str) -> None:
    done = run_helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION, "--set", flag
    )
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr


@pytest.mark.parametrize("env", ["training.env", "training.trainer.env"])
def test_the_schema_leaves_run_requests_to_the_chart(env: str) -> None:
    """A trainer told to run requests beside the dispatcher would train each one twice."""
    done = run_helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION,
        "--set", f"{env}.FETALMLOPS_TRAINER_RUN_REQUESTS=true",
    )  # fmt: skip
    assert done.returncode != 0 and "invalid propertyName" in done.stderr


@pytest.mark.parametrize(
    "setting",
    ["FETALMLOPS_INGEST_TOKENS", "FETALMLOPS_DATABASE_URL", "FETALMLOPS_ANONYMIZER_SECRET"],
)
def test_the_schema_refuses_secret_settings_in_values(setting: str) -> None:
    done = run_helm(
        "template", RELEASE, str(CHART), "--kube-version", KUBERNETES_VERSION,
        "--set", f"ingest.env.{setting}=x",
    )  # fmt: skip
    assert done.returncode != 0 and "invalid propertyName" in done.stderr


def test_every_object_level_of_the_schema_refuses_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    passthrough = {"affinity", "podSecurityContext", "containerSecurityContext"}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
            for key, child in node.items():
                walk(child, f"{where}.{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{where}[{index}]")

    walk(schema, "$")
    # Every key of values.yaml is declared, and the defaults pass (helm lint applies it too).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])
    assert passthrough <= set(schema["properties"]) | set(schema["definitions"])


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (CHART / "README.md").read_text()
    table = values_table.table(values_table.rows((CHART / "values.yaml").read_text()))
    assert values_table.with_table(readme, table) == readme, (
        "run python deploy/helm/values_table.py"
    )


def test_values_table_refuses_an_undocumented_value() -> None:
    text = "# -- Documented.\nimage:\n  # -- The tag.\n  tag: x\n  pullPolicy: Never\n"
    with pytest.raises(values_table.Undocumented, match=r"image\.pullPolicy"):
        values_table.rows(text)
    leaf = values_table.rows("# -- Resources,\n# whole.\nresources:\n  requests: {cpu: 1}\n")
    assert leaf == [
        values_table.Row("resources", "object", '{"requests": {"cpu": 1}}', "Resources, whole.")
    ]


# ---------------------------------------------------------------------------------------------
# The schema generator


def test_kubernetes_kinds_are_strict_and_standalone() -> None:
    swagger = {
        "definitions": {
            "io.k8s.api.demo.v1.Widget": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "size": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
                    "port": {
                        "$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "x-kubernetes-group-version-kind": [
                    {"group": "demo.example.io", "version": "v1", "kind": "Widget"}
                ],
            },
            "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
                "type": "string",
                "format": "int-or-string",
            },
        }
    }
    ((name, schema),) = list(k8s_schemas.kind_schemas(swagger))
    assert name == "widget-demo-v1.json"  # kubeconform's KindSuffix: the group's first label
    widget = schema["definitions"]["io.k8s.api.demo.v1.Widget"]
    assert widget["additionalProperties"] is False
    assert widget["properties"]["kind"] == {"type": "string", "enum": ["Widget"]}
    assert widget["properties"]["labels"]["additionalProperties"] == {"type": ["string", "null"]}
    quantity = schema["definitions"]["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert "number" in quantity["type"]
    assert k8s_schemas.kind_file("", "v1", "Service") == "service-v1.json"


def test_crds_become_strict_schemas() -> None:
    port = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    free = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"a": {"type": "string"}},
    }
    spec = {"type": "object", "properties": {"port": port, "free": free}}
    version = {
        "name": "v1beta1",
        "served": True,
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}},
    }
    crd = {
        "spec": {
            "group": "serving.kserve.io",
            "names": {"kind": "InferenceService"},
            "versions": [version],
        }
    }
    ((group, name, schema),) = list(k8s_schemas.crd_schemas(crd))
    assert (group, name) == ("serving.kserve.io", "inferenceservice_v1beta1.json")
    strict = schema["properties"]["spec"]
    assert strict["additionalProperties"] is False
    assert strict["properties"]["port"]["type"] == ["integer", "string"]
    assert "additionalProperties" not in strict["properties"]["free"]
