"""Training requests: the configuration an event describes (or a reason to refuse it), and the
one run both doors (the consumer and `fetalmlops train`) build from it."""

from __future__ import annotations

import pytest

from fetalmlops.common.bus import Rejected
from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.requests import config_of, request_for
from fetalmlops.trainer.settings import TrainerSettings
from fetalmlops.trainer.snapshots import Entry
from fetalmlops.trainer.training import TrainConfig
from fetalmlops.v1 import training_pb2

Hyperparameters = training_pb2.Hyperparameters


def test_a_request_becomes_a_configuration() -> None:
    event = training_pb2.TrainingRequested(
        backbone="resnet18",
        strategy=training_pb2.TRAINING_STRATEGY_LINEAR_PROBE,
        hyperparameters=Hyperparameters(epochs=4, learning_rate=0.0003, seed=9),
    )
    config = config_of(event)
    assert (config.backbone, config.strategy) == ("resnet18", Strategy.LINEAR_PROBE)
    assert (config.epochs, config.learning_rate, config.seed) == (4, 0.0003, 9)
    assert config.batch_size == TrainConfig.batch_size  # unset: the trainer's default
    defaults = config_of(training_pb2.TrainingRequested())
    assert (defaults.backbone, defaults.strategy) == ("tiny", Strategy.FINE_TUNE)
    fine_tune = training_pb2.TrainingRequested(strategy=training_pb2.TRAINING_STRATEGY_FINE_TUNE)
    assert config_of(fine_tune).strategy is Strategy.FINE_TUNE


def test_a_drift_retrain_repeats_the_drifted_versions_recipe_unless_told_otherwise() -> None:
    champion = TrainConfig(
        backbone="resnet18", strategy=Strategy.LINEAR_PROBE, epochs=12, learning_rate=3e-4
    )
    recipe = champion.to_dict() | {"a_setting_of_a_later_build": 1}
    alarm = training_pb2.TrainingRequested(reason="drift")
    assert config_of(alarm, recipe) == champion
    shorter = training_pb2.TrainingRequested(
        reason="drift", hyperparameters=Hyperparameters(epochs=3)
    )
    assert config_of(shorter, recipe) == TrainConfig(
        backbone="resnet18", strategy=Strategy.LINEAR_PROBE, epochs=3, learning_rate=3e-4
    )
    assert config_of(alarm, None) == TrainConfig()  # a version without a recipe: the defaults


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (training_pb2.TrainingRequested(backbone="alexnet"), "unknown backbone"),
        (training_pb2.TrainingRequested(strategy=7), "unknown strategy 7"),  # type: ignore[arg-type]
        (
            training_pb2.TrainingRequested(hyperparameters=Hyperparameters(epochs=0)),
            "epochs must be at least 1, not 0",
        ),
        (
            training_pb2.TrainingRequested(hyperparameters=Hyperparameters(learning_rate=-1)),
            "learning_rate must be at least 0",
        ),
    ],
)
def test_a_request_that_makes_no_sense_is_rejected_with_its_reason(
    event: training_pb2.TrainingRequested, reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        config_of(event)


def entry(image_id: str, cohort: str) -> Entry:
    return Entry(image_id, "other", f"fetal-anonymized/{image_id}.png", cohort=cohort)


def test_both_doors_build_the_same_run() -> None:
    own = TrainerSettings(model_name="fetal-planes")
    phantom = [entry("a", "highend-a"), entry("b", "portable")]
    run = request_for(own, TrainConfig(), phantom, ["portable"], fold=2)
    assert run.model_name == "fetal-planes" and run.fold == 2
    assert [e.image_id for e in run.out_of_domain["portable"]] == ["b"]
    assert run.synthetic  # every cohort is one of the phantom's scanners
    hospital = [*phantom, entry("c", "hospital-x")]
    named = request_for(own, TrainConfig(), hospital, [], model_name="other")
    assert named.model_name == "other" and not named.synthetic and named.out_of_domain == {}
