"""What one version's model card is made of: the facts `model_card` is given, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fetalmlops.carbon.tracking import Footprint
from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.efficiency import Efficiency
from fetalmlops.trainer.evaluation import Evaluation

INTENDED_USE = """\
Decision support for sonographers and obstetricians: the model suggests which standard plane
(fetal abdomen, brain, femur, thorax, maternal cervix, or other) a 2-D fetal ultrasound image
shows, to help file images, check that a biometry exam holds every required plane and flag
images to review. It does not diagnose, measure or detect anomalies, and its output is not a
clinical finding: a qualified person confirms every image that is used for care.

Intended users: clinical staff and the audit/quality software around them. Out of scope: images
that are not B-mode fetal or maternal-cervix ultrasound (Doppler, 3-D renders, other organs),
and any use without a person in the loop."""


@dataclass(frozen=True)
class CardFacts:
    """What one version's card is made of.

    `validation`, `test` and `out_of_domain` are evaluations of the *calibrated* probabilities,
    softmax(logits / `temperature`); the ECE of the raw softmax is given beside them, since it
    is the only metric temperature scaling changes.
    """

    model_name: str
    version: int
    backbone: str
    strategy: Strategy
    snapshot_id: str
    snapshot_counts: Mapping[str, Mapping[str, int]]  # split -> class -> images
    classes: Sequence[str]
    train_config: Mapping[str, Any]
    validation: Evaluation
    validation_ece_uncalibrated: float
    test: Evaluation | None
    test_ece_uncalibrated: float | None
    temperature: float
    efficiency: Efficiency
    footprint: Footprint | None
    created_at: datetime
    # The version's folder in the configured models bucket: the storageUri KServe mounts.
    storage_uri: str
    out_of_domain: Mapping[str, Evaluation] = field(default_factory=dict)  # cohort -> result
    cohorts: Sequence[str] = ()  # the cohorts/devices the snapshot drew its images from
    # The images come from the phantom generator (scanner profiles "highend-*", "portable").
    synthetic: bool = False
    intended_use: str = INTENDED_USE
    extra_limitations: Sequence[str] = ()
