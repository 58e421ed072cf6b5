"""The model card states every figure it is given, as evaluated, and nothing it was not given."""

import dataclasses
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from fetalmlops.carbon.tracking import Footprint
from fetalmlops.common.planes import Plane
from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.card import CONFUSION_MATRIX, RELIABILITY_DIAGRAM, CardFacts, model_card
from fetalmlops.trainer.efficiency import Efficiency
from fetalmlops.trainer.evaluation import Evaluation, evaluate

CLASSES = [plane.value for plane in Plane]


def evaluation(seed: int, skill: float, n: int = 240) -> Evaluation:
    """Probabilities that put `skill` more mass on the true class than on a random one."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    scores = rng.random((n, len(CLASSES)))
    scores[np.arange(n), labels] += skill
    return evaluate(labels, scores / scores.sum(axis=1, keepdims=True), CLASSES)


def facts(**changes: object) -> CardFacts:
    base = CardFacts(
        model_name="planes",
        version=3,
        backbone="resnet18",
        strategy=Strategy.LINEAR_PROBE,
        snapshot_id="snap-2024-06-01-abc123",
        snapshot_counts={
            "train": {name: 100 + 10 * i for i, name in enumerate(CLASSES)},
            "val": {name: 20 + i for i, name in enumerate(CLASSES)},
            "test": {name: 30 for name in CLASSES[:-1]},  # no `other` in this test split
        },
        classes=CLASSES,
        train_config={"epochs": 30, "learning_rate": 0.001, "weights": None, "amp": True},
        validation=evaluation(1, skill=0.8),
        validation_ece_uncalibrated=0.1234,
        test=evaluation(2, skill=0.6),
        test_ece_uncalibrated=0.0987,
        temperature=1.4321,
        efficiency=Efficiency(
            parameters=11_179_590,
            trainable_parameters=3_078,
            size_mb=44.789,
            cpu_latency_ms_p50=21.456,
            cpu_latency_ms_p95=25.111,
            threads=1,
            input_shape=(3, 224, 224),
        ),
        footprint=Footprint(
            energy_kwh=0.0123,
            emissions_kg_co2e=0.000689,
            duration_s=1834.2,
            country_iso_code="FRA",
            method="CPU measured by RAPL energy counters",
        ),
        created_at=datetime(2024, 6, 2, 9, 30, tzinfo=UTC),
        storage_uri="s3://fetal-models/planes/v3/",
        cohorts=("hospital-a", "hospital-b"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def section(card: str, title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", card, flags=re.M | re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_every_class_is_listed_with_its_figures_as_evaluated() -> None:
    given = facts()
    metrics = section(model_card(given), "Metrics")

    for split, result in (("validation", given.validation), ("test", given.test)):
        assert result is not None
        table = metrics.split(f"Per class, {split}:")[1]
        for name, m in result.per_class.items():
            row = f"| `{name}` | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.support} |"
            assert row in table
    validation_row = (
        f"| validation | {given.validation.n} | {given.validation.macro_f1:.3f} | "
        f"{given.validation.balanced_accuracy:.3f} | {given.validation.accuracy:.3f} | "
        f"0.123 | {given.validation.ece:.3f} |"
    )
    assert validation_row in metrics
    assert "| test |" in metrics and "0.099" in metrics
    assert "T = 1.432" in metrics
    assert f"]({CONFUSION_MATRIX})" in metrics
    assert f"]({RELIABILITY_DIAGRAM})" in metrics


def test_training_data_counts_every_class_per_split() -> None:
    data = section(model_card(facts()), "Training data")

    assert "snap-2024-06-01-abc123" in data
    assert "| Class | train | val | test |" in data
    assert "| `fetal_abdomen` | 100 | 20 | 30 |" in data
    assert "| `other` | 150 | 25 | 0 |" in data  # absent from the test split: zero, not blank
    assert "| **total** | **750** | **135** | **150** |" in data


def test_out_of_domain_section_only_when_evaluated() -> None:
    without = model_card(facts())
    assert "## Out-of-domain" not in without
    assert "No out-of-domain cohort was evaluated" in section(without, "Limitations")

    portable = evaluation(3, skill=0.2)
    given = facts(out_of_domain={"portable-c3": portable})
    card = model_card(given)
    assert given.test is not None
    drop = portable.macro_f1 - given.test.macro_f1
    assert f"| `portable-c3` | {portable.n} | {portable.macro_f1:.3f} | {drop:+.3f} |" in (
        section(card, "Out-of-domain")
    )
    # The limitations cite the measured figure, not a generic warning.
    assert f"`portable-c3` {portable.macro_f1:.3f}" in section(card, "Limitations")


def test_out_of_domain_is_compared_with_validation_when_there_is_no_test_split() -> None:
    portable = evaluation(3, skill=0.2)
    given = facts(test=None, test_ece_uncalibrated=None, out_of_domain={"portable": portable})
    card = model_card(given)

    assert "| test |" not in section(card, "Metrics")
    assert "Per class, test" not in card
    assert "No held-out test split" in card
    assert f"validation macro-F1 of {given.validation.macro_f1:.3f}" in card


def test_carbon_is_reported_or_said_to_be_unmeasured() -> None:
    measured = section(model_card(facts()), "Carbon")
    assert "0.0123 kWh" in measured
    assert "0.000689 kg CO2e" in measured
    assert "FRA" in measured
    assert "RAPL" in measured

    unmeasured = section(model_card(facts(footprint=None)), "Carbon")
    assert "not measured" in unmeasured
    assert "kWh" not in unmeasured


def test_efficiency_figures() -> None:
    efficiency = section(model_card(facts()), "Efficiency")
    assert "11,179,590" in efficiency
    assert "3,078" in efficiency
    assert "44.79 MB" in efficiency
    assert "21.46 ms" in efficiency
    assert "25.11 ms" in efficiency


def test_synthetic_phantom_data_is_flagged_at_the_top_and_in_the_limitations() -> None:
    real = model_card(facts())
    assert "Synthetic" not in real

    synthetic = model_card(facts(synthetic=True, cohorts=("highend-a", "portable")))
    assert "**Synthetic data.**" in synthetic.split("## Model details")[0]
    assert "phantom" in section(synthetic, "Limitations")


def test_how_to_use_gives_the_kserve_layout_and_a_v1_request() -> None:
    how = section(model_card(facts()), "How to use")
    assert "storageUri: s3://fetal-models/planes/v3/" in how
    assert "model-store/planes.mar" in how
    assert "config/config.properties" in how
    assert "/v1/models/planes:predict" in how
    assert '"instances"' in how

    custom = section(model_card(facts(storage_uri="s3://elsewhere/p/")), "How to use")
    assert "storageUri: s3://elsewhere/p/" in custom


@pytest.mark.parametrize(
    "changes",
    [{}, {"test": None, "test_ece_uncalibrated": None, "footprint": None}],
    ids=["complete", "sparse"],
)
def test_no_missing_value_leaks_as_none_or_nan(changes: dict[str, object]) -> None:
    card = model_card(facts(**changes))
    assert not re.search(r"\bNone\b|\bnan\b", card, flags=re.I)
    assert "| `weights` | not set |" in card  # a None in the config, said in words


def test_the_card_is_a_function_of_its_facts() -> None:
    assert model_card(facts()) == model_card(facts())
    assert model_card(facts()) != model_card(facts(version=4))
