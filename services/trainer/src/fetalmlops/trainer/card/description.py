"""What the model is, what it is for and what it learnt from: the card's opening sections."""

from __future__ import annotations

from collections.abc import Mapping

from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.card.facts import CardFacts
from fetalmlops.trainer.card.markdown import fields, setting, shape, table

STRATEGIES: Mapping[Strategy, str] = {
    Strategy.FINE_TUNE: "fine-tuning (every weight trained)",
    Strategy.LINEAR_PROBE: "linear probing (encoder frozen, new linear head trained)",
}


def title(facts: CardFacts) -> str:
    lines = [f"# Model card: {facts.model_name} version {facts.version}"]
    if facts.synthetic:
        lines += [
            "",
            "> **Synthetic data.** This version was trained and evaluated on phantom images "
            "drawn by `fetalmlops.datasets.phantom`, not on patients. Its figures show that "
            "the pipeline works; they say nothing about performance on real scans.",
        ]
    return "\n".join(lines)


def details(facts: CardFacts) -> str:
    input_shape = shape(facts.efficiency.input_shape)
    rows = [
        ("Model", facts.model_name),
        ("Version", str(facts.version)),
        ("Created", facts.created_at.isoformat(timespec="seconds")),
        ("Task", f"fetal ultrasound standard-plane classification, {len(facts.classes)} classes"),
        ("Classes (output order)", ", ".join(f"`{name}`" for name in facts.classes)),
        ("Backbone", f"`{facts.backbone}`"),
        ("Training", STRATEGIES[facts.strategy]),
        ("Input", f"greyscale image, resized and replicated to {input_shape}"),
        ("Calibration", f"temperature scaling, T = {facts.temperature:.3f} (fit on validation)"),
    ]
    config = [(f"`{key}`", setting(value)) for key, value in sorted(facts.train_config.items())]
    return "\n".join(
        [
            "## Model details",
            "",
            fields(rows),
            "",
            "Training configuration:",
            "",
            table(("Setting", "Value"), config),
        ]
    )


def intended_use(facts: CardFacts) -> str:
    return f"## Intended use\n\n{facts.intended_use}"


def training_data(facts: CardFacts) -> str:
    splits = list(facts.snapshot_counts)
    rows = [
        (f"`{name}`", *(str(facts.snapshot_counts[s].get(name, 0)) for s in splits))
        for name in facts.classes
    ]
    totals = [str(sum(facts.snapshot_counts[s].values())) for s in splits]
    rows.append(("**total**", *(f"**{total}**" for total in totals)))
    lines = [
        "## Training data",
        "",
        f"Dataset snapshot `{facts.snapshot_id}`, split by patient (no patient in two splits).",
    ]
    if facts.cohorts:
        lines.append(f"Cohorts/devices: {', '.join(f'`{c}`' for c in facts.cohorts)}.")
    lines += ["", "Images per class and split:", "", table(("Class", *splits), rows)]
    return "\n".join(lines)
