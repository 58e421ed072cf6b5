"""Champion against challenger under a change-control plan: on which images, and what the
verdict keeps as evidence.

Both models are scored on the same images (`evaluation_set`): the plan's sequestered test set
and, when a drift alarm asked for the run, the training snapshot's test-split images of the
drifted scanner segment — patients no model trained on, from the scanner the retrain answers,
so the gate sees whether the shift was learnt. The verdict (`fetalmlops.changecontrol.
acceptance.judge`) is stored with its evidence (`evidence`): the plan and its digest, the
sequestered set and its hash, the champion, how many images of each segment were scored, the
seed of the bootstrap and both models' latency. The registry keeps that document, the audit
trail cites it, and `fetal.models.trained` carries it (`verdict_message`). Everything here is
pure; `scoring.py` runs the models and `platform.py` does the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fetalmlops.changecontrol.acceptance import Verdict
from fetalmlops.trainer.governance import Governance
from fetalmlops.trainer.snapshots import Entry, Manifest
from fetalmlops.v1 import models_pb2


def evaluation_set(
    sequestered: Manifest, training: Manifest, drift_segment: str = ""
) -> list[Entry]:
    """The images both models are scored on, in image-id order: every image of the sequestered
    set, and the ``training`` snapshot's test images of ``drift_segment`` when one is named
    (none for a k-fold snapshot, which has no test split)."""
    chosen = {e.image_id: e for e in sequestered.entries}
    if drift_segment:
        for entry in training.entries:
            if training.assignment[entry.image_id] == "test" and entry.segment == drift_segment:
                chosen.setdefault(entry.image_id, entry)
    return [chosen[image_id] for image_id in sorted(chosen)]


def images_per_segment(entries: Sequence[Entry]) -> dict[str, int]:
    return dict(sorted(Counter(e.segment for e in entries).items()))


def evidence(
    verdict: Verdict,
    governance: Governance,
    champion_version: int,
    images: Sequence[Entry],
    drift_segment: str,
    seed: int,
    latency_p95_ms: Mapping[str, float],
) -> dict[str, Any]:
    """The verdict and what it was reached on, as plain JSON (no NaN: an unmeasured figure is
    None); ``champion_version`` 0 means there was no champion."""
    return {
        **verdict.to_dict(),
        "plan_version": governance.plan.plan_version,
        "plan_digest": governance.digest,
        "sequestered_snapshot_id": governance.sequestered.id,
        "sequestered_sha256": governance.sequestered.sha256,
        "champion_version": champion_version,
        "drift_segment": drift_segment,
        "images": len(images),
        "images_per_segment": images_per_segment(images),
        "seed": seed,
        "latency_p95_ms": dict(latency_p95_ms),
    }


def verdict_message(document: Mapping[str, Any]) -> models_pb2.GateVerdict:
    """The `GateVerdict` of `fetal.models.trained` for a stored ``evidence`` document."""
    message = models_pb2.GateVerdict(
        passed=document["passed"],
        plan_version=document["plan_version"],
        plan_digest=document["plan_digest"],
        champion_version=document["champion_version"],
        sequestered_snapshot_id=document["sequestered_snapshot_id"],
        images=document["images"],
    )
    for check in document["checks"]:
        gate_check = message.checks.add(
            name=check["name"], bound=check["bound"], passed=check["passed"]
        )
        if check["value"] is not None:  # unset: the images could not measure it
            gate_check.value = check["value"]
    return message


def summary(document: Mapping[str, Any]) -> str:
    """One line for a person: the outcome, the plan, and the checks that failed."""
    outcome = "passed" if document["passed"] else "failed"
    against = (
        f"against v{document['champion_version']}" if document["champion_version"] else "alone"
    )
    line = (
        f"gate {outcome} under plan {document['plan_version']} on {document['images']} images, "
        f"{against}"
    )
    failed = [check["name"] for check in document["checks"] if not check["passed"]]
    return f"{line}; failed: {', '.join(failed)}" if failed else line
