"""`make demo`: the whole loop on this machine, told step by step, every figure measured.

It starts `fetalmlops up` (every service in one process, on the embedded bus, directory store
and SQLite; `--stack` for the real Kafka, MinIO and PostgreSQL) and then acts as the hospital
around it, through the platform's public doors only: a scanner's DICOM C-STORE, a PACS's
DICOMweb STOW-RS, the labels importer, the trainer's API, KServe's V1 protocol, clinicians'
feedback and the monitor's reports. What it checks directly is what no API shows: where the
planted PHI ended up (every object, table row, log line and metric).

    .venv/bin/python deploy/local/demo/demo.py [--data-dir DIR] [--small] [--stack]
        [--report FILE] [--exit]

`--small` is the size CI runs (tests/integration/test_demo.py); `--report` writes the figures
as JSON; `--exit` stops the platform at the end instead of serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from story import (  # the demo's own module, beside it
    Clinic,
    Platform,
    Sizes,
    labelled_studies,
    phi_channels,
    push_over_cstore,
    push_over_stowrs,
    say,
    screenshot,
    step,
    summary_table,
    write_plan,
)

from fetalmlops.common.db import ModelStage
from fetalmlops.datasets.phantom.phi import hits, planted_phi, sidecar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache/fetalmlops/demo")
    parser.add_argument("--small", action="store_true", help="the size CI runs")
    parser.add_argument("--stack", action="store_true", help="on the real local stack")
    parser.add_argument("--report", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--exit", action="store_true", help="stop at the end, not on Ctrl-C")
    parser.add_argument("--screenshot", type=Path, help="the dashboard, drawn by Chromium, here")
    parser.add_argument("--http-port", type=int, default=8100)
    parser.add_argument("--scp-port", type=int, default=11112)
    parser.add_argument("--database", help="with --stack: another database of its PostgreSQL")
    parser.add_argument("--model", default="fetal-planes", help="the model trained and served")
    args = parser.parse_args()
    sizes = Sizes.small() if args.small else Sizes()
    began = time.monotonic()
    shutil.rmtree(args.data_dir, ignore_errors=True)
    work = args.data_dir / "hospital"
    report: dict[str, Any] = {"sizes": sizes.__dict__}

    step(0, "every service started together: `fetalmlops up`")
    options = ["--http-port", str(args.http_port), "--scp-port", str(args.scp_port)]
    options += ["--model", args.model, *(["--stack"] if args.stack else [])]
    options += ["--database", args.database] if args.database else []
    with Platform.up(args.data_dir, options, sizes) as platform:
        say(f"{platform.backend} platform up in {time.monotonic() - began:.0f} s")

        step(1, "studies with planted PHI pushed over C-STORE and STOW-RS")
        pushed = labelled_studies(work / "pacs", sizes.pushed_patients, "highend-b", seed=5)
        studies = sorted((pushed / "dicom").glob("*.dcm"))
        half = len(studies) // 2
        stored = push_over_cstore(platform, studies[:half])
        accepted = push_over_stowrs(platform, studies[half:])
        say(f"C-STORE (pynetdicom SCU): {stored}/{half} stored, status 0x0000")
        say(f"STOW-RS (dicomweb-client): {accepted}/{len(studies) - half} stored")
        report["pushed"] = {"cstore": stored, "stowrs": accepted, "studies": len(studies)}

        step(2, "anonymized: the planted PHI stays in the raw zone")
        platform.wait_catalogued(len(studies), "pushed studies anonymized and catalogued")
        planted = [sidecar(study) for study in studies]
        phi = planted_phi(planted)
        # What the files' bytes carry: every planted value but the banner's lines, which are
        # burnt into the pixels (and blanked by the anonymizer).
        written = planted_phi([one | {"burned_in": []} for one in planted])
        channels = phi_channels(platform)
        in_raw = hits(written, channels.pop("raw zone"))
        elsewhere = {name: sorted(hits(phi, found)) for name, found in channels.items()}
        say(
            f"{len(phi)} planted values; of the {len(written)} the files carry as bytes, "
            f"{len(in_raw)} found in the raw zone, where they belong"
        )
        for name, found in elsewhere.items():
            say(f"  {name}: {len(found)} found ({len(channels[name])} searched)")
        report["phi"] = {
            "planted": len(phi),
            "written": len(written),
            "in_raw_zone": len(in_raw),
            "elsewhere": {name: len(found) for name, found in elsewhere.items()},
        }

        step(3, "labels imported, a sequestered test set, v1 trained and promoted")
        high_end = labelled_studies(work / "high-end", sizes.high_end_patients, "highend-a", 11)
        platform.import_labelled(high_end)
        sequestered = platform.sequester()
        snapshot, digest = sequestered["snapshot_id"], sequestered["sha256"]
        say(f"sequestered test set {snapshot} (sha256 {digest[:12]}…)")
        write_plan(platform.plan, platform.model, sequestered, sizes)
        say(f"change-control plan written: {platform.plan}")
        platform.request_training(sizes)
        first = platform.wait_version(1, ModelStage.PRODUCTION, "v1 trained, gated, promoted")
        say(f"v1: validation macro-F1 {first['validation_macro_f1']:.3f}, {gate(first)}")
        say(f"its model card: {first['card']}")
        platform.wait_serving(1)
        platform.watched(1)
        report["v1"] = first

        clinic = Clinic(platform)
        step(4, "clinics send studies: the high-end scanners, then a new portable one")
        clinic.stream("highend-a", sizes.high_end_stream, seed=40_000)
        say(f"{clinic.answered} answered by v1, each confirmed by a clinician (POST /v1/feedback)")

        step(5, "a new scanner: drift alarm, retraining, gate, shadow and canary, promotion")
        portable = labelled_studies(work / "portable", sizes.portable_patients, "portable", 12)
        platform.import_labelled(portable)
        say("the portable scanner's first studies, labelled by its sonographers, catalogued")
        with clinic.streaming("portable", seed=50_000):
            alarm = platform.wait_alarm()
            why = alarm["reason"]
            say(
                f"drift alarm on {alarm['segment']}: window {why['window']}, strongest test "
                f"{why['test']} (combined p = {why['p_value']:.1e}), retraining requested"
            )
            second = platform.wait_version(2, None, "v2 trained and judged by the gate")
            say(f"v2: {gate(second)}")
            report["phases"] = []
            for phase in platform.rollout_phases(2):
                say(f"v2 rollout: {phase}")
                report["phases"].append(phase)
            platform.wait_version(2, ModelStage.PRODUCTION, "v2 promoted")
            clinic.wait_answers_by(2, sizes.after_promotion)
        report["alarm"] = alarm
        report["v2"] = platform.version(2)
        report["rollout"] = platform.rollout(2)

        step(6, "feedback shows the recovery")
        recovery = clinic.recovery("portable")
        report["recovery"] = recovery
        report["failures"] = clinic.failures
        print(summary_table(report))
        report["seconds"] = round(time.monotonic() - began, 1)
        say(f"the whole story in {report['seconds']:.0f} s; dashboard: {platform.dashboard}")
        if args.screenshot:
            screenshot(platform.dashboard, args.screenshot)
            report["screenshot"] = str(args.screenshot)
            say(f"the dashboard as Chromium draws it: {args.screenshot}")
        if args.report:
            args.report.write_text(json.dumps(report, indent=2, default=str))
        if not args.exit:
            say("the platform keeps serving; Ctrl-C stops it")
            platform.wait_for_ctrl_c()
    say("fetalmlops up stopped: no service, no port left")
    return 0


def gate(version: dict[str, Any]) -> str:
    verdict = version["gate"] or {}
    checks = verdict.get("checks", [])
    passed = sum(1 for check in checks if check["passed"])
    word = "passed" if verdict.get("passed") else "failed"
    images = verdict.get("images", 0)
    return f"gate {word}: {passed}/{len(checks)} checks on {images} sequestered images"


if __name__ == "__main__":
    sys.exit(main())
