"""The demo's cast: the platform it started, the hospital's systems and the clinics around it.

`Platform` runs `fetalmlops up` and reaches it as any client would (`endpoints.json`, the
operator's token); its database and object store are read only to wait for the catalog and the
registry and to search for PHI. `Clinic` sends studies to KServe's V1 ``:predict`` and confirms
each answer's plane over ingest's ``POST /v1/feedback``, keeping every answer it got.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fetalmlops.common.db import (
    Base,
    Image,
    IngestRecord,
    Label,
    ModelStage,
    ModelVersion,
    create_engine_for,
    session_scope,
)
from fetalmlops.common.planes import Plane
from fetalmlops.common.settings import Settings, settings_env
from fetalmlops.common.store import open_store
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.samples import sample_dicom
from fetalmlops.metrics import classification
from fetalmlops.up.layout import Layout, embedded_values

FETALMLOPS = Path(sys.executable).with_name("fetalmlops")
EXAMPLE_PLAN = Path(__file__).parents[2] / "change-control" / "plan.yaml"
PLANES = [plane.value for plane in Plane]
CALLING_AE = "FETAL_PACS"  # the calling AE title ingest lets associate by default
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


BEGAN = time.monotonic()


def step(number: int, title: str) -> None:
    elapsed = int(time.monotonic() - BEGAN)
    console.print(
        f"\n[bold]{number}. {title}[/bold] [dim]({elapsed // 60}:{elapsed % 60:02d})[/dim]"
    )


def say(text: str) -> None:
    console.print(f"   {text}")


def progress() -> Progress:
    return Progress(
        TextColumn("   {task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How much of everything: the default fits six minutes on two cores."""

    pushed_patients: int = 2  # studies with planted PHI, half over C-STORE, half over STOW-RS
    high_end_patients: int = 50  # labelled studies v1 learns from
    portable_patients: int = 40  # the new scanner's labelled studies v2 learns from too
    high_end_stream: int = 100  # studies the clinics send before the new scanner arrives
    after_promotion: int = 40  # answers by v2, as champion, before the recovery is measured
    window: int = 12  # the monitor's drift windows: the reference must hold two
    epochs: int = 20

    @classmethod
    def small(cls) -> Sizes:
        return cls(pushed_patients=1, high_end_patients=40, portable_patients=24,
                   high_end_stream=60, after_promotion=30, window=10, epochs=15)  # fmt: skip


# --- the hospital's data -----------------------------------------------------------------------


def labelled_studies(out: Path, patients: int, profile: str, seed: int) -> Path:
    """Phantom DICOM studies of one scanner with their labels, each with planted PHI and the
    sidecar that lists it."""
    generate(out, plan(patients, seed=seed, profiles=(profile,)), seed=seed, fmt=OutputFormat.DICOM)
    return out


@dataclass(frozen=True)
class Study:
    dicom: bytes
    plane: str
    profile: str


def studies(first_seed: int, count: int, profile: str) -> Iterator[Study]:
    for seed in range(first_seed, first_seed + count):
        yield Study(sample_dicom(seed, profile), plan(1, seed, (profile,))[0].plane.value, profile)


# --- the platform ------------------------------------------------------------------------------


@dataclass
class Platform:
    process: subprocess.Popen[bytes]
    data_dir: Path
    endpoints: dict[str, Any]
    token: str
    settings: Settings  # the operator's view: every table and bucket

    @classmethod
    @contextlib.contextmanager
    def up(cls, data_dir: Path, options: list[str], sizes: Sizes) -> Iterator[Platform]:
        """`fetalmlops up` started, and stopped (Ctrl-C) on the way out."""
        layout = Layout(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(FETALMLOPS), "up", "--data-dir", str(data_dir),
            "--plan", str(data_dir / "plan.yaml"),
            *options,
        ]  # fmt: skip
        env = os.environ | {
            "FETALMLOPS_MONITOR_WINDOW_SIZE": str(sizes.window),
            "FETALMLOPS_MONITOR_CALIBRATION_WINDOWS": "60",
            "FETALMLOPS_MONITOR_ROLLOUT_REVIEW_SECONDS": "1",
        }
        output = (data_dir / "up.out").open("wb")
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            with console.status("   waiting for every service to answer"):
                wait_for(lambda: layout.endpoints.exists() or process.poll() is not None, 600)
            if process.poll() is not None:
                raise SystemExit(f"fetalmlops up stopped:\n{(data_dir / 'up.out').read_text()}")
            say((data_dir / "up.out").read_text().strip().replace("\n", "\n   "))
            endpoints = json.loads(layout.endpoints.read_text())
            token = json.loads(layout.secrets.read_text())["token"]
            if endpoints["backend"] == "stack":
                from fetalmlops.stack.config import DATABASE
                from fetalmlops.stack.stack import settings_values

                database = endpoints["database"] or DATABASE
                settings = Settings(**settings_values(None, database=database))
            else:
                settings = Settings(**embedded_values(layout))
            yield cls(process, data_dir, endpoints, token, settings)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
            output.close()

    @property
    def backend(self) -> str:
        return str(self.endpoints["backend"])

    @property
    def model(self) -> str:
        return str(self.endpoints["model"])

    @property
    def plan(self) -> Path:
        return Path(self.endpoints["plan"])

    @property
    def dashboard(self) -> str:
        return str(self.endpoints["dashboard"])

    def readable(self, uri: str) -> str:
        """Where a user opens an object: its file, on the embedded directory store."""
        if self.backend != "embedded" or not uri.startswith("s3://"):
            return uri
        return str(self.settings.store_dir / uri.removeprefix("s3://"))

    def url(self, service: str) -> str:
        return str(self.endpoints["services"][service])

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @functools.cached_property
    def _engine(self) -> sa.Engine:
        return create_engine_for(self.settings.database_url)

    def engine(self) -> sa.Engine:
        """One pool for the whole story (an engine per look would hold connections open)."""
        return self._engine

    def count(self, table: type[Image] | type[Label]) -> int:
        with session_scope(self.engine()) as session:
            return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    def wait_catalogued(self, images: int, what: str) -> None:
        with console.status(f"   {what}"):
            wait_for(lambda: self.count(Image) >= images, 600, what)

    def import_labelled(self, dataset: Path) -> None:
        """`fetalmlops dataset import` through ingest's HTTP API; then until the anonymizer
        has catalogued every study with its label."""
        expected = len(list((dataset / "dicom").glob("*.dcm")))
        images, labels = self.count(Image), self.count(Label)
        run_command(
            "dataset", "import", str(dataset), "--format", "csv", "--url", self.url("ingest"),
            "--token", self.token, "--journal-dir", str(dataset / "journal"),
        )  # fmt: skip
        with console.status(f"   {expected} labelled studies anonymized and catalogued"):
            wait_for(
                lambda: (
                    self.count(Label) >= labels + expected
                    and self.count(Image) >= images + expected
                ),
                600,
                "labelled studies catalogued",
            )
        say(f"{expected} labelled studies imported and catalogued")

    def sequester(self) -> dict[str, str]:
        """`fetalmlops snapshot sequester`: a fifth of the labelled patients, never trained on."""
        out = run_command(
            "snapshot",
            "sequester",
            "--share",
            "0.2",
            "--seed",
            "3",
            env=settings_env(self.settings),
        )
        found = dict(re.findall(r"^(snapshot_id|sha256): (\S+)$", out, re.MULTILINE))
        return {"snapshot_id": found["snapshot_id"], "sha256": found["sha256"]}

    def request_training(self, sizes: Sizes) -> str:
        body = {
            "backbone": "tiny",
            "hyperparameters": {
                "epochs": sizes.epochs, "patience": sizes.epochs, "input_size": 64, "seed": 0,
            },
        }  # fmt: skip
        response = httpx.post(
            f"{self.url('trainer')}/v1/training-requests", json=body, headers=self.headers()
        )
        response.raise_for_status()
        request_id = str(response.json()["request_id"])
        say(f"training requested over the trainer's API (request {request_id[:8]}…)")
        return request_id

    def version(self, number: int) -> dict[str, Any] | None:
        with session_scope(self.engine()) as session:
            row = session.scalars(
                sa.select(ModelVersion).where(
                    ModelVersion.model_name == self.model, ModelVersion.version == number
                )
            ).one_or_none()
            if row is None:
                return None
            return {
                "version": row.version,
                "stage": row.stage.value,
                "validation_macro_f1": (row.metrics or {}).get("val_macro_f1"),
                "gate": row.gate,
                "snapshot_id": row.snapshot_id,
                "card": self.readable(f"{row.storage_uri}model-card.md"),
            }

    def wait_version(self, number: int, stage: ModelStage | None, what: str) -> dict[str, Any]:
        def reached() -> bool:
            found = self.version(number)
            if found is None:
                return False
            return found["gate"] is not None if stage is None else found["stage"] == stage.value

        with console.status(f"   {what}"):
            wait_for(reached, 900, what)
        found = self.version(number)
        assert found is not None
        return found

    def wait_serving(self, number: int) -> None:
        with console.status(f"   the inference service loading v{number}"):
            wait_for(lambda: httpx.get(f"{self.url('inference')}/readyz").status_code == 200, 300)

    def reports(self, path: str) -> Any:
        response = httpx.get(f"{self.url('monitor')}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def watched(self, number: int) -> None:
        """The monitor watches v``number`` for drift, or the demo stops with the reason."""
        versions = self.reports("/v1/reports")["versions"]
        if not any(v["model_version"] == number and v["watched_for_drift"] for v in versions):
            raise SystemExit(
                f"the monitor cannot watch v{number} for drift (see {self.endpoints['log']}): "
                "its drift reference is too small for two windows; give it more patients"
            )

    def wait_alarm(self) -> dict[str, Any]:
        def published() -> list[dict[str, Any]]:
            return [a for a in self.reports("/v1/reports/alarms") if a["published_at"]]

        with console.status("   the monitor watching each scanner's windows"):
            wait_for(lambda: bool(published()), 900, "the drift alarm")
        return published()[0]

    def rollout(self, number: int) -> dict[str, Any] | None:
        found = [r for r in self.reports(f"/v1/rollouts?model={self.model}")
                 if r.get("challenger_version") == number]  # fmt: skip
        return found[0] if found else None

    def rollout_phases(self, number: int) -> Iterator[str]:
        """Each phase v``number``'s rollout goes through, as it happens."""
        seen: list[str] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            found = self.rollout(number)
            phase = None if found is None else str(found["phase"])
            if phase is not None and phase not in seen:
                seen.append(phase)
                yield f"{phase} ({found['reason']})" if found and found.get("reason") else phase
                if phase in ("promoted", "rolled_back"):
                    return
            time.sleep(0.5)
        raise TimeoutError(f"v{number}'s rollout did not end")

    def wait_for_ctrl_c(self) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            self.process.wait()


def run_command(*arguments: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(FETALMLOPS), *arguments], env=os.environ | (env or {}),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"fetalmlops {' '.join(arguments[:2])} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met in {timeout_s:.0f} s")
        time.sleep(0.5)


def write_plan(path: Path, model: str, sequestered: dict[str, str], sizes: Sizes) -> None:
    """The project's example plan for this demo: its sequestered set, one annotator per study
    (the importer's), bars a small phantom model clears, and a rollout that ends in minutes."""
    document = yaml.safe_load(EXAMPLE_PLAN.read_text())
    document["model"] = model
    document["plan_version"] = "demo"
    document["data"] |= {"min_agreeing_annotators": 1, "sequestered_test": sequestered}
    document["acceptance"] |= {
        "macro_f1_non_inferiority_margin": 0.2,
        "recall_floors": dict.fromkeys(PLANES, 0.0),
        "segment_macro_f1_floor": 0.0,
        "ece_ceiling": 1.0,
        "latency_p95_ms_ceiling": 60_000,
    }
    document["rollout"] = {
        "shadow": True, "shadow_min_predictions": 2 * sizes.window, "canary_fraction": 0.5,
        "min_predictions": 30, "min_feedback": 20, "max_duration_hours": 2,
        # The champion errs on the new scanner, so a challenger that learnt it disagrees often.
        "stop_rules": {"max_macro_f1_drop": 0.3, "max_disagreement": 0.95, "max_error_rate": 0.05},
    }  # fmt: skip
    document["approval"] = {"required": False, "approvers": []}
    path.write_text(yaml.safe_dump(document))


# --- PACS pushes -------------------------------------------------------------------------------


def push_over_cstore(platform: Platform, files: list[Path]) -> int:
    """C-STORE from a third-party SCU (pynetdicom), as a scanner or PACS would; stored count."""
    from pydicom import dcmread
    from pynetdicom import AE

    dicom = platform.endpoints["dicom"]
    ae = AE(ae_title=CALLING_AE)
    datasets = [dcmread(path) for path in files]
    for sop_class, syntax in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(sop_class, syntax)
    association = ae.associate(dicom["host"], dicom["port"], ae_title=dicom["ae_title"])
    if not association.is_established:
        raise SystemExit("the C-STORE SCP refused the association")
    stored = 0
    try:
        with progress() as bar:
            task = bar.add_task("C-STORE", total=len(datasets))
            for dataset in datasets:
                status = association.send_c_store(dataset)
                stored += int(getattr(status, "Status", -1) == 0)
                bar.advance(task)
    finally:
        association.release()
    return stored


def push_over_stowrs(platform: Platform, files: list[Path]) -> int:
    """STOW-RS from a third-party DICOMweb client (dicomweb-client); stored count."""
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    client = DICOMwebClient(platform.endpoints["dicomweb"], headers=platform.headers())
    stored = 0
    with progress() as bar:
        task = bar.add_task("STOW-RS", total=len(files))
        for path in files:
            answer = client.store_instances([dcmread(path)])
            stored += len(answer.get("ReferencedSOPSequence", []))
            bar.advance(task)
    return stored


# --- where the PHI went ------------------------------------------------------------------------


def phi_channels(platform: Platform) -> dict[str, list[bytes]]:
    """Every channel the platform writes, raw zone apart: objects (keys and bytes) in every
    other bucket, every row of every table, the log and each service's metrics. On a stack its
    buckets may hold other platforms' objects: their keys are searched, and the bytes of this
    platform's own (named by its images, uploads and model)."""
    settings = platform.settings
    with session_scope(platform.engine()) as session:
        mine = {
            *session.scalars(sa.select(Image.id)),
            *session.scalars(sa.select(IngestRecord.sha256)),
        }
    mine.add(f"{platform.model}/")

    def ours(key: str) -> bool:
        return platform.backend == "embedded" or any(name in key for name in mine)

    store = open_store(settings)
    channels: dict[str, list[bytes]] = {"raw zone": [], "objects": []}
    for bucket in settings.buckets.all():
        zone = "raw zone" if bucket == settings.buckets.raw else "objects"
        for info in store.list(bucket):
            channels[zone].append(info.key.encode())
            if ours(info.key):
                channels[zone].append(store.get(bucket, info.key))
    with platform.engine().connect() as connection:
        channels["table rows"] = [
            repr(tuple(row)).encode()
            for table in Base.metadata.sorted_tables
            for row in connection.execute(sa.select(table))
        ]
    channels["log"] = [Path(platform.endpoints["log"]).read_bytes()]
    channels["metrics"] = [
        httpx.get(f"{url}/metrics").content for url in platform.endpoints["services"].values()
    ]
    return channels


# --- the clinics -------------------------------------------------------------------------------


@dataclass
class Answer:
    profile: str
    version: int
    arm: str
    predicted: str
    truth: str


@dataclass
class Clinic:
    platform: Platform
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.answers)

    def send(self, study: Study, client: httpx.Client) -> None:
        """One study to ``:predict``; the clinician's plane back over ``POST /v1/feedback``."""
        platform = self.platform
        body = {"instances": [{"b64": base64.b64encode(study.dicom).decode()}]}
        try:
            response = client.post(platform.endpoints["predict"], json=body, timeout=60)
        except httpx.HTTPError as exc:
            self.failures.append(type(exc).__name__)
            return
        if response.status_code != 200:
            self.failures.append(f"{response.status_code} {response.text[:200]}")
            return
        (prediction,) = response.json()["predictions"]
        self.answers.append(Answer(
            study.profile, int(str(prediction["model_version"]).lstrip("v")), prediction["arm"],
            prediction["label"], study.plane,
        ))  # fmt: skip
        feedback = {
            "prediction_id": prediction["prediction_id"],
            "true_plane": study.plane,
            "reviewer": "sonographer-1",
        }
        given = client.post(
            f"{platform.url('ingest')}/v1/feedback", json=feedback, headers=platform.headers()
        )
        if given.status_code != 202:
            self.failures.append(f"feedback {given.status_code} {given.text[:200]}")

    def stream(self, profile: str, count: int, seed: int) -> None:
        with progress() as bar, httpx.Client() as client:
            task = bar.add_task(f"{profile} studies", total=count)
            for study in studies(seed, count, profile):
                self.send(study, client)
                bar.advance(task)

    @contextlib.contextmanager
    def streaming(self, profile: str, seed: int) -> Iterator[None]:
        """Studies of ``profile`` sent, one after the other, until the block ends."""
        stop = threading.Event()

        def send() -> None:
            with httpx.Client() as client:
                for study in studies(seed, 1_000_000, profile):
                    if stop.is_set():
                        return
                    self.send(study, client)
                    time.sleep(0.05)  # a clinic's pace, which leaves the trainer a core

        sender = threading.Thread(target=send, name=f"{profile} clinic", daemon=True)
        sender.start()
        try:
            yield
        finally:
            stop.set()
            sender.join(120)

    def wait_answers_by(self, version: int, count: int) -> None:
        def answered() -> int:
            return sum(1 for a in self.answers if a.version == version and a.arm == "champion")

        with console.status(f"   v{version} answering as champion"):
            wait_for(lambda: answered() >= count, 600, f"{count} answers by v{version}")

    def recovery(self, profile: str) -> dict[str, Any]:
        """Macro-F1 of each version's answers on ``profile``, as clinicians confirmed them."""
        figures = {}
        for version in sorted({a.version for a in self.answers if a.profile == profile}):
            mine = [a for a in self.answers if a.profile == profile and a.version == version]
            confusion = classification.confusion_matrix(
                [PLANES.index(a.truth) for a in mine],
                [PLANES.index(a.predicted) for a in mine],
                len(PLANES),
            )
            figures[f"v{version}"] = {
                "macro_f1": round(float(classification.macro_f1(confusion, over="truth")), 3),
                "answers": len(mine),
                "arms": dict(Counter(a.arm for a in mine)),
            }
        return figures


def screenshot(url: str, out: Path) -> None:
    """The page at ``url`` as headless Chromium draws it (`make system-packages` installs it)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is missing: `make system-packages` installs it")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--virtual-time-budget=5000", "--window-size=1400,2200", f"--screenshot={out}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip


# --- the summary -------------------------------------------------------------------------------


def summary_table(report: dict[str, Any]) -> str:
    table = Table(title="what the demo showed", show_lines=False)
    table.add_column("step")
    table.add_column("measured")
    phi = report["phi"]
    elsewhere = sum(phi["elsewhere"].values())
    table.add_row(
        "PACS pushes",
        f"{report['pushed']['cstore']} C-STORE + {report['pushed']['stowrs']} STOW-RS stored",
    )
    table.add_row(
        "PHI",
        f"{phi['in_raw_zone']}/{phi['written']} planted header values in the raw zone, "
        f"{elsewhere} elsewhere",
    )
    table.add_row(
        "v1",
        f"validation macro-F1 {report['v1']['validation_macro_f1']:.3f}, promoted",
    )
    table.add_row("drift", f"alarm on {report['alarm']['segment']}")
    rollout = report.get("rollout") or {}
    table.add_row("v2", f"gate passed, rollout {rollout.get('phase')}")
    for version, figures in report["recovery"].items():
        table.add_row(
            f"portable, {version}",
            f"feedback macro-F1 {figures['macro_f1']:.3f} over {figures['answers']} answers",
        )
    table.add_row("failed requests", str(len(report["failures"])))
    capture = Console(width=110)
    with capture.capture() as captured:
        capture.print(table)
    return captured.get()
