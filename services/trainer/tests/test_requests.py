"""Training requests from Kafka: the configuration they describe, or a reason to refuse them."""

from __future__ import annotations

import pytest

from fetalmlops.common.bus import Rejected
from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.main import config_of
from fetalmlops.v1 import training_pb2


def test_a_request_becomes_a_configuration() -> None:
    event = training_pb2.TrainingRequested(
        backbone="resnet18",
        strategy="linear_probe",
        parameters={"epochs": "4", "learning_rate": "0.0003", "ood_cohorts": "portable"},
    )
    config = config_of(event)
    assert (config.backbone, config.strategy) == ("resnet18", Strategy.LINEAR_PROBE)
    assert (config.epochs, config.learning_rate) == (4, 0.0003)
    defaults = config_of(training_pb2.TrainingRequested())
    assert (defaults.backbone, defaults.strategy) == ("tiny", Strategy.FINE_TUNE)
    assert config_of(training_pb2.TrainingRequested(strategy="full_finetune")).strategy is (
        Strategy.FINE_TUNE
    )


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (training_pb2.TrainingRequested(backbone="alexnet"), "unknown backbone"),
        (training_pb2.TrainingRequested(strategy="distill"), "unknown strategy"),
        (training_pb2.TrainingRequested(parameters={"epochs": "many"}), "not a number"),
    ],
)
def test_a_request_that_makes_no_sense_is_rejected_with_its_reason(
    event: training_pb2.TrainingRequested, reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        config_of(event)
