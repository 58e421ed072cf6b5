"""The closed loop on the real stack, end to end, under a change-control plan.

Every service runs as its own process (ingest, anonymizer, trainer, inference, monitor) on real
Kafka, MinIO and PostgreSQL, with a database of the run's own so that the catalog holds exactly
its studies. Labelled studies of the high-end scanner come in through ingest and the anonymizer;
`fetalmlops snapshot sequester` fixes the sequestered test set the plan names. The trainer,
asked over Kafka, trains the first version; it passes the gate (no champion yet) and the
monitor promotes it. The inference service serves it; clinics send studies of the high-end
scanner, then of a portable one, with clinicians' feedback, while newly labelled studies of the
portable scanner arrive through ingest too. The monitor's drift alarm asks for retraining; the
trainer (SIGKILLed mid-run and restarted) trains a challenger on a fresh snapshot holding the
new scanner's studies, with the champion's recipe, and judges it on the sequestered set and the
portable scanner's held-out patients; the monitor (SIGKILLed in shadow and restarted) moves it
through shadow and canary, and promotes it; the registry and the inference service follow.

Shown: the new version answers the portable scanner better than the old one (feedback macro-F1,
both printed), no client request failed, there was one retraining and each decision once, and
`fetalmlops audit verify` holds after the run and fails once one row is changed in PostgreSQL.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from fetalmlops.common.bus import KafkaBus, publish_event
from fetalmlops.common.db import (
    Feedback,
    Image,
    Label,
    ModelStage,
    ModelVersion,
    ObservedPrediction,
    RetrainingRequest,
    Rollout,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.db.audit import entries
from fetalmlops.common.planes import Plane, plane_to_proto
from fetalmlops.common.settings import Settings, settings_env
from fetalmlops.common.store import open_store
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.metrics import classification
from fetalmlops.stack.stack import scratch_database, settings_values
from fetalmlops.v1 import feedback_pb2, models_pb2, training_pb2

from .ingest_service import (
    IMPORTER_TOKEN,
    RunningIngest,
    from_beginning,
    private_topics,
    running_ingest,
)
from .model_versions import build_version
from .phantoms import tag_cohorts
from .processes import ServiceProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.timeout(2400)]
FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
EXAMPLE_PLAN = Path(__file__).parents[2] / "deploy" / "change-control" / "plan.yaml"
SECRET = "closed-loop-secret"
PLANES = [plane.value for plane in Plane]
HIGH_END, PORTABLE = "Sonora Systems/Sonora X9", "PocketEcho/PocketScan C3"
WINDOW = 20  # the monitor's drift windows: small, as the reference (the validation split) is
TRAINING = training_pb2.Hyperparameters(epochs=15, patience=15, input_size=64, seed=0)
# The plan of this run: the loop, not the phantom model's quality, is under test here, so the
# bars are ones a small model clears; the rollout's minimums are small so that it ends quickly.
ACCEPTANCE: dict[str, Any] = {
    "macro_f1_non_inferiority_margin": 0.2,
    "recall_floors": dict.fromkeys(PLANES, 0.0),
    "segment_macro_f1_floor": 0.0,
    "ece_ceiling": 1.0,
    "latency_p95_ms_ceiling": 60_000,
}
ROLLOUT: dict[str, Any] = {
    "shadow": True,
    "shadow_min_predictions": 40,
    "canary_fraction": 0.5,
    "min_predictions": 30,
    "min_feedback": 20,
    "max_duration_hours": 2,
    # The champion errs on the new scanner, so a challenger that learnt it disagrees often.
    "stop_rules": {"max_macro_f1_drop": 0.3, "max_disagreement": 0.95, "max_error_rate": 0.05},
}


@dataclass(frozen=True)
class Study:
    dicom: bytes
    plane: str


@dataclass
class Clinic:
    """Clinicians sending studies to the inference service and confirming the planes."""

    inference: ServiceProcess
    model: str
    owner: Settings
    failures: list[str] = field(default_factory=list)
    answered: int = 0
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (version, arm) answers

    def send(self, study: Study, bus: KafkaBus) -> dict[str, Any] | None:
        body = {"instances": [{"b64": base64.b64encode(study.dicom).decode()}]}
        try:
            response = httpx.post(
                f"{self.inference.url}/v1/models/{self.model}:predict", json=body, timeout=60
            )
        except httpx.HTTPError as exc:
            self.failures.append(type(exc).__name__)
            return None
        if response.status_code != 200:
            self.failures.append(f"{response.status_code} {response.text[:200]}")
            return None
        self.answered += 1
        answer = response.json()
        (prediction,) = answer["predictions"]
        self.served[(prediction["model_version"], prediction["arm"])] += 1
        event = feedback_pb2.FeedbackGiven(
            prediction_id=prediction["prediction_id"],
            true_plane=plane_to_proto(study.plane),
            reviewer="sonographer-1",
        )
        publish_event(bus, self.owner.topics.feedback, prediction["prediction_id"], event, "clinic")
        return dict(answer)


@dataclass
class Site:
    tag: str
    owner: Settings
    env: Callable[[str], dict[str, str]]
    work: Path
    plan_file: Path
    ingest: RunningIngest
    trainer: ServiceProcess
    monitor: ServiceProcess

    @property
    def model(self) -> str:
        return f"planes-loop-{self.tag}"

    @functools.cached_property
    def _engine(self) -> sa.Engine:
        return create_engine_for(self.owner.database_url)

    def engine(self) -> sa.Engine:
        """One pool for the whole run: an engine per look would leave its connections open
        until collected, and PostgreSQL's slots run out."""
        return self._engine

    def versions(self) -> dict[int, ModelVersion]:
        with session_scope(self.engine()) as session:
            rows = session.scalars(
                sa.select(ModelVersion).where(ModelVersion.model_name == self.model)
            )
            return {row.version: row for row in rows}

    def stage(self, number: int) -> ModelStage | None:
        found = self.versions().get(number)
        return None if found is None else found.stage

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """A snapshot's manifest, as `fetal-datasets` keeps it."""
        store = open_store(self.owner)
        document: dict[str, Any] = json.loads(
            store.get(self.owner.buckets.datasets, f"snapshots/{snapshot_id}.json")
        )
        return document

    def fetalmlops(
        self, *arguments: str, service: str = "trainer"
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FETALMLOPS), *arguments],
            env={**os.environ, **self.env(service)},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip


def studies(first_seed: int, count: int, profile: str) -> list[Study]:
    """Studies as the scanner writes them (PHI in header and banner), with their true planes."""

    def one(seed: int) -> Study:
        return Study(sample_dicom(seed, profile), plan(1, seed, (profile,))[0].plane.value)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(first_seed, first_seed + count)))


@contextmanager
def traffic(clinic: Clinic, first_seed: int, profile: str = "portable") -> Iterator[None]:
    """A clinic sending studies of one scanner, each confirmed, at a clinic's pace, until the
    block ends."""
    stop = threading.Event()

    def send() -> None:
        bus = KafkaBus(clinic.owner.kafka_bootstrap_servers)
        seed = first_seed
        while not stop.is_set():
            for study in studies(seed, 10, profile):
                clinic.send(study, bus)
                time.sleep(0.05)  # which leaves the trainer a core
            seed += 10
        bus.close()

    sender = threading.Thread(target=send, name=f"{profile} clinic")
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join(300)


def labelled(out: Path, patients: int, profile: str, tag: str, seed: int) -> Path:
    """Labelled phantom studies of one scanner, their cohort named for this run."""
    generate(out, plan(patients, seed=seed, profiles=(profile,)), seed=seed, fmt=OutputFormat.DICOM)
    return tag_cohorts(out, tag)


def catalogue(site: Site, dataset: Path) -> None:
    """Import through ingest; wait until the anonymizer has catalogued every study, labelled."""
    expected = len(list((dataset / "dicom").glob("*.dcm")))
    with session_scope(site.engine()) as session:
        before = session.scalar(sa.select(sa.func.count()).select_from(Label)) or 0
    result = site.fetalmlops(
        "dataset", "import", str(dataset), "--format", "csv", "--url", site.ingest.url,
        "--token", IMPORTER_TOKEN, "--journal-dir", str(dataset / "journal"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    def done() -> bool:
        with session_scope(site.engine()) as session:
            images = session.scalar(sa.select(sa.func.count()).select_from(Image)) or 0
            labels = session.scalar(sa.select(sa.func.count()).select_from(Label)) or 0
        return labels - before == expected and images >= labels

    wait_for(done, 600, f"{expected} studies catalogued with their labels")


def write_plan(site_plan: Path, model: str, snapshot_id: str, sha256: str) -> None:
    document = yaml.safe_load(EXAMPLE_PLAN.read_text())
    document["model"] = model
    document["plan_version"] = "closed-loop-test"
    document["data"] |= {
        "min_agreeing_annotators": 1,  # the importer gives each study one reading
        "sequestered_test": {"snapshot_id": snapshot_id, "sha256": sha256},
    }
    document["acceptance"] |= ACCEPTANCE
    document["rollout"] = ROLLOUT
    document["approval"] = {"required": False, "approvers": []}
    site_plan.write_text(yaml.safe_dump(document))


@pytest.fixture(scope="module")
def site(
    stack_settings: Callable[[str | None], Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    stack_settings(None)  # fails the test when the stack is down
    work = tmp_path_factory.mktemp("closed-loop")
    tag = uuid.uuid4().hex[:8]
    with scratch_database(f"fetalmlops_loop_{tag}") as database:
        topics = private_topics(stack_settings(None).kafka_bootstrap_servers, partitions=1)

        def settings(service: str | None) -> Settings:
            values = settings_values(service, database=database)
            return Settings(**values).model_copy(update={"topics": topics})  # type: ignore[arg-type]

        owner = settings(None)
        upgrade(owner.database_url)
        plan_file = work / "plan.yaml"
        model = f"planes-loop-{tag}"
        own = {
            "anonymizer": {"FETALMLOPS_ANONYMIZER_SECRET": SECRET},
            "trainer": {
                "FETALMLOPS_TRAINER_MODEL_NAME": model,
                "FETALMLOPS_TRAINER_WORKDIR": str(work / "trainer"),
                "FETALMLOPS_TRAINER_PLAN": str(plan_file),
                "FETALMLOPS_KAFKA_MAX_POLL_INTERVAL_MS": "1800000",
            },
            "monitor": {
                "FETALMLOPS_MONITOR_PLAN": str(plan_file),
                "FETALMLOPS_MONITOR_WINDOW_SIZE": str(WINDOW),
                "FETALMLOPS_MONITOR_CALIBRATION_WINDOWS": "60",
                "FETALMLOPS_MONITOR_ROLLOUT_REVIEW_SECONDS": "0",
            },
        }

        def env(service: str) -> dict[str, str]:
            return settings_env(settings(service)) | own.get(service, {})

        anonymizer = ServiceProcess("anonymizer", env("anonymizer"), work / "anonymizer.log")
        trainer = ServiceProcess("trainer", env("trainer"), work / "trainer.log")
        monitor = ServiceProcess("monitor", env("monitor"), work / "monitor.log")
        with running_ingest(owner, settings("ingest"), work / "ingest.log") as ingest:
            anonymizer.start()
            site = Site(tag, owner, env, work, plan_file, ingest, trainer, monitor)
            try:
                yield site
            finally:
                # The site's, not the first ones: tests restart them under other plans.
                for service in (site.monitor, site.trainer, anonymizer):
                    service.stop()


@dataclass(frozen=True)
class Loop:
    clinic: Clinic
    first: ModelVersion
    second: ModelVersion
    sequestered: str
    timings: dict[str, float]


@pytest.fixture(scope="module")
def loop(site: Site) -> Iterator[Loop]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    high_end = labelled(site.work / "high-end", 60, "highend-a", site.tag, seed=11)
    portable = labelled(site.work / "portable", 40, "portable", site.tag, seed=12)
    catalogue(site, high_end)
    timings["catalogued"] = time.monotonic() - started

    sequester = site.fetalmlops("snapshot", "sequester", "--share", "0.2", "--seed", "3")
    assert sequester.returncode == 0, sequester.stderr[-3000:]
    snapshot_id = re.search(r"snapshot_id: (\S+)", sequester.stdout).group(1)  # type: ignore[union-attr]
    sha256 = re.search(r"sha256: ([0-9a-f]{64})", sequester.stdout).group(1)  # type: ignore[union-attr]
    write_plan(site.plan_file, site.model, snapshot_id, sha256)
    assert site.fetalmlops("plan", "validate", str(site.plan_file)).returncode == 0
    site.trainer.start(timeout_s=120)
    site.monitor.start(timeout_s=120)

    bus = KafkaBus(site.owner.kafka_bootstrap_servers)
    first_request = training_pb2.TrainingRequested(
        request_id=uuid.uuid4().hex, model_name=site.model, backbone="tiny", reason="cli",
        hyperparameters=TRAINING,
    )  # fmt: skip
    topics = site.owner.topics
    publish_event(bus, topics.training_requested, first_request.request_id, first_request, "test")
    wait_for(lambda: site.stage(1) is ModelStage.PRODUCTION, 900, "v1 trained, gated, promoted")
    first = site.versions()[1]
    timings["first version"] = time.monotonic() - started
    first_run = list((site.work / "trainer").glob("*/checkpoints/*"))

    inference = ServiceProcess(
        "inference",
        site.env("inference") | {"FETALMLOPS_INFERENCE_MODEL_URI": first.storage_uri},
        site.work / "inference.log",
    )
    inference.start(timeout_s=120)
    clinic = Clinic(inference, site.model, site.owner)
    try:
        catalogue(site, portable)  # the new scanner's first studies, labelled
        for study in studies(40_000, 5 * WINDOW, "highend-a"):
            clinic.send(study, bus)
        with traffic(clinic, 50_000):
            wait_for(lambda: alarms(site) > 0, 600, "the drift alarm's retraining request")
            timings["alarm"] = time.monotonic() - started
            # The trainer dies mid-run and comes back: the request is trained once.
            runs = site.work / "trainer"
            wait_for(lambda: len(list(runs.glob("*/checkpoints/*"))) > len(first_run), 600,
                     "the retraining's first checkpoint")  # fmt: skip
            assert 2 not in site.versions()
            site.trainer.stop(signal.SIGKILL)
            site.trainer.start(timeout_s=120)
            wait_for(lambda: rollout_phase(site, 2) == "shadow", 1200, "v2 gated, in shadow")
            timings["challenger in shadow"] = time.monotonic() - started
            site.monitor.stop(signal.SIGKILL)  # and so does the monitor, in shadow
            site.monitor.start(timeout_s=120)
            wait_for(lambda: site.stage(2) is ModelStage.PRODUCTION, 1200, "v2 promoted")
            timings["challenger promoted"] = time.monotonic() - started
            settled = clinic.answered
            wait_for(lambda: clinic.answered >= settled + 60, 600, "v2 answering as champion")
        versions = site.versions()
        yield Loop(clinic, first, versions[2], snapshot_id, timings)
    finally:
        bus.close()
        inference.stop()


def alarms(site: Site) -> int:
    with session_scope(site.engine()) as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(RetrainingRequest)
                .where(RetrainingRequest.published_at.is_not(None))
            )
            or 0
        )


def rollout_phase(site: Site, version: int) -> str | None:
    with session_scope(site.engine()) as session:
        found = session.scalars(
            sa.select(Rollout).where(Rollout.challenger_version == version)
        ).one_or_none()
        return None if found is None else found.phase.value


def feedback_macro_f1(site: Site, version: int, segment: str) -> tuple[float, int]:
    """Macro-F1 of ``version``'s answers on ``segment`` that a clinician confirmed."""
    with session_scope(site.engine()) as session:
        rows = session.execute(
            sa.select(ObservedPrediction.predicted, Feedback.true_plane)
            .join(Feedback, Feedback.prediction_id == ObservedPrediction.prediction_id)
            .where(
                ObservedPrediction.model_version == version,
                ObservedPrediction.segment == segment,
                ObservedPrediction.arm.in_(["champion", "challenger"]),
            )
        ).all()
    confusion = classification.confusion_matrix(
        [PLANES.index(truth.value) for _, truth in rows],
        [PLANES.index(predicted) for predicted, _ in rows],
        len(PLANES),
    )
    return float(classification.macro_f1(confusion, over="truth")), len(rows)


def test_a_scanner_shift_ends_with_a_better_model_promoted_and_no_request_failed(
    site: Site, loop: Loop
) -> None:
    print("\n" + ", ".join(f"{step} at {seconds:.0f} s" for step, seconds in loop.timings.items()))
    assert loop.clinic.failures == []
    old, old_n = feedback_macro_f1(site, 1, PORTABLE)
    new, new_n = feedback_macro_f1(site, 2, PORTABLE)
    print(
        f"feedback macro-F1 on the portable scanner: v1 {old:.3f} ({old_n} confirmed answers), "
        f"v2 {new:.3f} ({new_n})"
    )
    assert new > old and old_n >= 30 and new_n >= 30

    second = loop.second
    assert second.parent_version == 1 and second.recipe == loop.first.recipe
    assert second.gate is not None and second.gate["passed"]
    assert loop.first.stage is ModelStage.PRODUCTION and site.stage(1) is ModelStage.ARCHIVED
    # The challenger learnt from the new scanner's newly labelled studies, and from nothing
    # of the sequestered set.
    manifest = site.snapshot(second.snapshot_id or "")
    devices = {entry["device"] for entry in manifest["entries"]}
    assert PORTABLE in devices and HIGH_END in devices
    sequestered = site.snapshot(loop.sequestered)
    held = {entry["image_id"] for entry in sequestered["entries"]}
    assert held and not held & {entry["image_id"] for entry in manifest["entries"]}


def test_one_retraining_and_each_decision_once_despite_the_kills(site: Site, loop: Loop) -> None:
    assert set(site.versions()) == {1, 2}  # one version per request, the SIGKILL notwithstanding
    assert alarms(site) == 1
    with session_scope(site.engine()) as session:
        trail = [(e.actor, e.action) for e in entries(session, f"model:{site.model}:v2")]
    for decision in [("trainer", "registered"), ("trainer", "gate passed"),
                     ("monitor", "rollout started"), ("monitor", "rollout: canary"),
                     ("monitor", "rollout: promote"), ("trainer", "promoted")]:  # fmt: skip
        assert trail.count(decision) == 1, (decision, trail)
    # By sequence: a state published twice (the monitor killed between publishing it and
    # marking it published) is one decision.
    states: dict[int, models_pb2.RolloutChanged] = {}
    for record in from_beginning(site.owner, [site.owner.topics.models_rollout]):
        state = models_pb2.RolloutChanged.FromString(record.value)
        states.setdefault(state.sequence, state)
    v2 = [
        (s.mode, s.champion_version, s.challenger_version)
        for _, s in sorted(states.items())
        if 2 in (s.challenger_version, s.champion_version)
    ]
    assert v2 == [
        (models_pb2.ROLLOUT_MODE_SHADOW, 1, 2),
        (models_pb2.ROLLOUT_MODE_CANARY, 1, 2),
        (models_pb2.ROLLOUT_MODE_UNSPECIFIED, 2, 0),
    ]


def variant(site: Site, name: str, **sections: Any) -> Path:
    """The run's plan with ``sections`` changed: another plan version, in a file of its own."""
    document = yaml.safe_load(site.plan_file.read_text())
    for section, values in sections.items():
        document[section] = document[section] | values if isinstance(values, dict) else values
    document["plan_version"] = f"closed-loop-test-{name}"
    path = site.work / f"plan-{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def restarted(site: Site, service: str, plan_file: Path, **env: str) -> None:
    """``service`` stopped and started again under ``plan_file``, as an operator would."""
    variable = {"trainer": "FETALMLOPS_TRAINER_PLAN", "monitor": "FETALMLOPS_MONITOR_PLAN"}
    getattr(site, service).stop()
    process = ServiceProcess(
        service,
        site.env(service) | {variable[service]: str(plan_file)} | env,
        site.work / f"{service}.log",
    )
    setattr(site, service, process)  # stopped at the end even if its start fails
    process.start(timeout_s=120)


def retrain(site: Site, seed: int) -> None:
    """A training request from the command line: v2's recipe with another seed (the same seed
    on the same snapshot is v2's run, which the trainer would find instead of training)."""
    request = training_pb2.TrainingRequested(
        request_id=uuid.uuid4().hex, model_name=site.model, backbone="tiny", reason="cli",
        hyperparameters=training_pb2.Hyperparameters(
            epochs=15, patience=15, input_size=64, seed=seed
        ),
    )  # fmt: skip
    bus = KafkaBus(site.owner.kafka_bootstrap_servers)
    publish_event(bus, site.owner.topics.training_requested, request.request_id, request, "cli")
    bus.close()


def trail_of(site: Site, version: int) -> list[tuple[str, str]]:
    with session_scope(site.engine()) as session:
        return [(e.actor, e.action) for e in entries(session, f"model:{site.model}:v{version}")]


def rollout_states(site: Site) -> list[models_pb2.RolloutChanged]:
    records = from_beginning(site.owner, [site.owner.topics.models_rollout])
    return [models_pb2.RolloutChanged.FromString(r.value) for r in records]


def test_a_challenger_that_fails_the_gate_is_never_served(site: Site, loop: Loop) -> None:
    strict = variant(site, "strict", acceptance={"recall_floors": dict.fromkeys(PLANES, 1.0)})
    restarted(site, "trainer", strict)
    try:
        retrain(site, seed=1)
        with traffic(loop.clinic, 70_000):
            wait_for(lambda: site.stage(3) is ModelStage.REJECTED, 900, "v3 judged")
            answered = loop.clinic.answered
            wait_for(lambda: loop.clinic.answered >= answered + 30, 300, "traffic after it")
    finally:
        restarted(site, "trainer", site.plan_file)
    rejected = site.versions()[3]
    assert rejected.gate is not None and not rejected.gate["passed"]
    assert trail_of(site, 3).count(("trainer", "gate failed")) == 1
    assert rollout_phase(site, 3) is None
    assert not any(3 in (s.champion_version, s.challenger_version) for s in rollout_states(site))
    assert not [key for key in loop.clinic.served if key[0] == "3"]
    assert site.stage(2) is ModelStage.PRODUCTION and loop.clinic.failures == []


def test_a_challenger_worse_in_canary_is_rolled_back_and_no_request_fails(
    site: Site, loop: Loop
) -> None:
    """A worse version (untrained) planted through the registry as a challenger that passed
    the gate; under a plan without shadow it goes straight to canary."""
    restarted(site, "monitor", variant(site, "canary-first", rollout={"shadow": False}))
    try:
        store = open_store(site.owner)
        worse = build_version(site.work, site.model, 4, seed=7)
        uri = worse.upload(store, site.owner.buckets.models, f"{site.model}/v4/")
        with session_scope(site.engine()) as session:
            session.add(
                ModelVersion(
                    model_name=site.model, version=4, stage=ModelStage.CHALLENGER,
                    storage_uri=uri, backbone="tiny", gate={"passed": True, "planted": "test"},
                )
            )  # fmt: skip
        planted = models_pb2.ModelTrained(
            model_name=site.model, version=4, storage_uri=uri,
            gate=models_pb2.GateVerdict(passed=True, champion_version=2),
        )  # fmt: skip
        bus = KafkaBus(site.owner.kafka_bootstrap_servers)
        publish_event(bus, site.owner.topics.models_trained, site.model, planted, "test")
        bus.close()
        with traffic(loop.clinic, 80_000):
            wait_for(lambda: rollout_phase(site, 4) == "rolled_back", 900, "v4 rolled back")
            wait_for(lambda: site.stage(4) is ModelStage.REJECTED, 120, "v4 rejected")
    finally:
        restarted(site, "monitor", site.plan_file)
    assert loop.clinic.served[("4", "challenger")] >= 30  # it did answer, in canary
    with session_scope(site.engine()) as session:
        rollout = session.scalars(sa.select(Rollout).where(Rollout.challenger_version == 4)).one()
        assert "macro-F1" in rollout.reason, rollout.reason
    trail = trail_of(site, 4)
    assert trail.count(("monitor", "rollout: roll back")) == 1
    assert trail.count(("trainer", "rejected")) == 1
    assert site.stage(2) is ModelStage.PRODUCTION and loop.clinic.failures == []


def test_nothing_is_promoted_until_the_approvers_the_plan_names_sign(
    site: Site, loop: Loop
) -> None:
    approval = variant(
        site, "approval", approval={"required": True, "approvers": ["clinical-lead", "ml-lead"]}
    )
    tokens = {"lead-token": ["models:approve", "reports:read"], "reader-token": ["reports:read"]}
    restarted(site, "monitor", approval, FETALMLOPS_MONITOR_TOKENS=json.dumps(tokens))
    url = site.monitor.url

    def approve(by: str, token: str) -> subprocess.CompletedProcess[str]:
        return site.fetalmlops(
            "model", "approve", "5", "--by", by, "--reason", f"{by}: canary figures reviewed",
            "--model", site.model, "--url", url, "--token", token, service="monitor",
        )  # fmt: skip

    retrain(site, seed=2)
    with traffic(loop.clinic, 90_000):
        wait_for(lambda: rollout_phase(site, 5) == "awaiting_approval", 1200, "v5 awaiting")
        answered = loop.clinic.answered
        wait_for(lambda: loop.clinic.answered >= answered + 20, 300, "traffic while it waits")
        assert site.stage(5) is ModelStage.CHALLENGER and site.stage(2) is ModelStage.PRODUCTION
        refused = approve("clinical-lead", "reader-token")
        assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
        first = approve("clinical-lead", "lead-token")
        assert first.returncode == 0 and "awaiting_approval" in first.stdout, first.stderr
        assert site.stage(5) is ModelStage.CHALLENGER
        second = approve("ml-lead", "lead-token")
        assert second.returncode == 0 and "promoted" in second.stdout, second.stderr
        wait_for(lambda: site.stage(5) is ModelStage.PRODUCTION, 120, "v5 in production")
    trail = trail_of(site, 5)
    assert trail.count(("monitor", "approval refused")) == 1
    assert ("person:clinical-lead", "approved") in trail and ("person:ml-lead", "approved") in trail
    assert trail.index(("person:ml-lead", "approved")) < trail.index(("trainer", "promoted"))
    assert site.stage(2) is ModelStage.ARCHIVED and loop.clinic.failures == []


def test_the_audit_trail_verifies_and_a_changed_row_is_caught(site: Site, loop: Loop) -> None:
    holds = site.fetalmlops("audit", "verify")
    assert holds.returncode == 0, holds.stderr
    engine = site.engine()
    with engine.begin() as connection:  # the owner may lift its own table's trigger
        connection.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        connection.execute(
            sa.text(
                "UPDATE audit_log SET details = jsonb_set(details, '{reason}', '\"edited\"') "
                "WHERE id = (SELECT min(id) FROM audit_log WHERE action = 'rollout: promote')"
            )
        )
        connection.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    broken = site.fetalmlops("audit", "verify")
    assert broken.returncode == 1 and "not what was written" in broken.stderr
