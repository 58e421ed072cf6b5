"""The model card: what a clinical lead reads before a plane classifier version is promoted.

`model_card` is a pure function from the facts of one trained version to Markdown, in the
sections of Mitchell et al. 2019 ("Model Cards for Model Reporting") that apply here: details,
intended use, training data, metrics, out-of-domain results, efficiency, carbon, limitations
and how to call it. The two figures are written beside the card by the caller, under the names
`CONFUSION_MATRIX` and `RELIABILITY_DIAGRAM`, and linked relatively so the card renders from the
object store, a repository or a registry UI alike.

Every metric is printed to three decimals, as the evaluation's own figures are; a missing value
is said in words, never as ``None`` or ``nan``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fetalmlops.trainer.backbones import Strategy
from fetalmlops.trainer.carbon import Footprint
from fetalmlops.trainer.efficiency import Efficiency
from fetalmlops.trainer.evaluation import ECE_BINS, Evaluation

CONFUSION_MATRIX = "confusion_matrix.png"
RELIABILITY_DIAGRAM = "reliability.png"

INTENDED_USE = """\
Decision support for sonographers and obstetricians: the model suggests which standard plane
(fetal abdomen, brain, femur, thorax, maternal cervix, or other) a 2-D fetal ultrasound image
shows, to help file images, check that a biometry exam holds every required plane and flag
images to review. It does not diagnose, measure or detect anomalies, and its output is not a
clinical finding: a qualified person confirms every image that is used for care.

Intended users: clinical staff and the audit/quality software around them. Out of scope: images
that are not B-mode fetal or maternal-cervix ultrasound (Doppler, 3-D renders, other organs),
and any use without a person in the loop."""

FIELD = ("", "Value")
STRATEGIES: Mapping[Strategy, str] = {
    Strategy.FINE_TUNE: "fine-tuning (every weight trained)",
    Strategy.LINEAR_PROBE: "linear probing (encoder frozen, new linear head trained)",
}


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


def model_card(facts: CardFacts) -> str:
    sections = [
        _title(facts),
        _details(facts),
        _intended_use(facts),
        _training_data(facts),
        _metrics(facts),
        _out_of_domain(facts),
        _efficiency(facts.efficiency),
        _carbon(facts.footprint),
        _limitations(facts),
        _how_to_use(facts),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _title(facts: CardFacts) -> str:
    lines = [f"# Model card: {facts.model_name} version {facts.version}"]
    if facts.synthetic:
        lines += [
            "",
            "> **Synthetic data.** This version was trained and evaluated on phantom images "
            "drawn by `fetalmlops.datasets.phantom`, not on patients. Its figures show that "
            "the pipeline works; they say nothing about performance on real scans.",
        ]
    return "\n".join(lines)


def _details(facts: CardFacts) -> str:
    shape = " × ".join(str(side) for side in facts.efficiency.input_shape)
    rows = [
        ("Model", facts.model_name),
        ("Version", str(facts.version)),
        ("Created", facts.created_at.isoformat(timespec="seconds")),
        ("Task", f"fetal ultrasound standard-plane classification, {len(facts.classes)} classes"),
        ("Classes (output order)", ", ".join(f"`{name}`" for name in facts.classes)),
        ("Backbone", f"`{facts.backbone}`"),
        ("Training", STRATEGIES[facts.strategy]),
        ("Input", f"greyscale image, resized and replicated to {shape}"),
        ("Calibration", f"temperature scaling, T = {facts.temperature:.3f} (fit on validation)"),
    ]
    config = [(f"`{key}`", _value(value)) for key, value in sorted(facts.train_config.items())]
    return "\n".join(
        [
            "## Model details",
            "",
            _table(FIELD, rows),
            "",
            "Training configuration:",
            "",
            _table(("Setting", "Value"), config),
        ]
    )


def _intended_use(facts: CardFacts) -> str:
    return f"## Intended use\n\n{facts.intended_use}"


def _training_data(facts: CardFacts) -> str:
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
    lines += ["", "Images per class and split:", "", _table(("Class", *splits), rows)]
    return "\n".join(lines)


def _metrics(facts: CardFacts) -> str:
    temperature = f"T = {facts.temperature:.3f}"
    header = (
        "Split",
        "Images",
        "Macro-F1",
        "Balanced accuracy",
        "Accuracy",
        "ECE, raw softmax",
        f"ECE, {temperature}",
    )
    splits: list[tuple[str, Evaluation, float | None]] = [
        ("validation", facts.validation, facts.validation_ece_uncalibrated)
    ]
    if facts.test is not None:
        splits.append(("test", facts.test, facts.test_ece_uncalibrated))
    headline = [
        (
            name,
            str(evaluation.n),
            _score(evaluation.macro_f1),
            _score(evaluation.balanced_accuracy),
            _score(evaluation.accuracy),
            _score(raw_ece),
            _score(evaluation.ece),
        )
        for name, evaluation, raw_ece in splits
    ]
    lines = [
        "## Metrics",
        "",
        "Macro-F1 weighs every plane equally, however rare; balanced accuracy is the mean "
        f"per-class recall; ECE (expected calibration error, {ECE_BINS} bins) is the gap "
        f"between the confidence and the accuracy, before and after temperature scaling "
        f"({temperature}).",
        "",
        _table(header, headline),
    ]
    if facts.test is None:
        lines += ["", "No held-out test split was evaluated for this version."]
    for name, evaluation, _ in splits:
        lines += ["", f"Per class, {name}:", "", _per_class(evaluation)]
    lines += [
        "",
        f"![Confusion matrix]({CONFUSION_MATRIX})",
        "",
        f"![Reliability diagram]({RELIABILITY_DIAGRAM})",
    ]
    return "\n".join(lines)


def _per_class(evaluation: Evaluation) -> str:
    rows = [
        (
            f"`{name}`",
            _score(metrics.precision),
            _score(metrics.recall),
            _score(metrics.f1),
            str(metrics.support),
        )
        for name, metrics in evaluation.per_class.items()
    ]
    return _table(("Class", "Precision", "Recall", "F1", "Support"), rows)


def _out_of_domain(facts: CardFacts) -> str:
    if not facts.out_of_domain:
        return ""
    reference_name, reference = _in_domain(facts)
    rows = [
        (
            f"`{cohort}`",
            str(evaluation.n),
            _score(evaluation.macro_f1),
            _signed(evaluation.macro_f1 - reference.macro_f1),
            _score(evaluation.balanced_accuracy),
            _score(evaluation.ece),
        )
        for cohort, evaluation in facts.out_of_domain.items()
    ]
    header = ("Cohort/device", "Images", "Macro-F1", f"Δ vs {reference_name}", "Balanced acc.")
    return "\n".join(
        [
            "## Out-of-domain",
            "",
            f"Cohorts or devices absent from the training snapshot, against the in-domain "
            f"{reference_name} macro-F1 of {_score(reference.macro_f1)}.",
            "",
            _table((*header, "ECE"), rows),
        ]
    )


def _efficiency(efficiency: Efficiency) -> str:
    shape = " × ".join(str(side) for side in efficiency.input_shape)
    threads = "thread" if efficiency.threads == 1 else "threads"
    rows = [
        ("Parameters", f"{efficiency.parameters:,}"),
        ("Trainable parameters", f"{efficiency.trainable_parameters:,}"),
        ("Weights size", f"{efficiency.size_mb:.2f} MB"),
        ("CPU latency, median (p50)", f"{efficiency.cpu_latency_ms_p50:.2f} ms"),
        ("CPU latency, p95", f"{efficiency.cpu_latency_ms_p95:.2f} ms"),
    ]
    return "\n".join(
        [
            "## Efficiency",
            "",
            f"One {shape} image at a time on CPU, {efficiency.threads} {threads}: how a "
            "scanner-side or clinic-server deployment runs it.",
            "",
            _table(FIELD, rows),
        ]
    )


def _carbon(footprint: Footprint | None) -> str:
    if footprint is None:
        return "## Carbon\n\nEnergy and emissions of the training run: not measured."
    rows = [
        ("Energy", f"{footprint.energy_kwh:.3g} kWh"),
        ("Emissions", f"{footprint.emissions_kg_co2e:.3g} kg CO2e"),
        ("Grid", f"{footprint.country_iso_code} (CodeCarbon's carbon intensity for the country)"),
        ("Duration", f"{footprint.duration_s:.1f} s"),
        ("How", footprint.method),
    ]
    return "\n".join(
        ["## Carbon", "", "The training run, as CodeCarbon measured it:", "", _table(FIELD, rows)]
    )


def _limitations(facts: CardFacts) -> str:
    seen = ", ".join(f"`{c}`" for c in facts.cohorts) if facts.cohorts else "its snapshot"
    points = [
        "Decision support only: a wrong plane is possible with high confidence; a person "
        "confirms every image used for care.",
        f"Trained on the cohorts/devices of {seen} only. Scanners, presets, probes and "
        "populations it has not seen change the images (gain, depth, speckle, annotations), "
        "and a drop in accuracy on them is expected.",
    ]
    if facts.out_of_domain:
        _, reference = _in_domain(facts)
        drops = "; ".join(
            f"`{cohort}` {_score(evaluation.macro_f1)}"
            for cohort, evaluation in facts.out_of_domain.items()
        )
        points.append(
            f"Measured on other cohorts/devices, macro-F1 was {drops}, against "
            f"{_score(reference.macro_f1)} in domain (see Out-of-domain)."
        )
    else:
        points.append("No out-of-domain cohort was evaluated: performance elsewhere is unknown.")
    points += [
        "The temperature was fit on the in-domain validation split: on other devices the "
        "confidences may be miscalibrated, whatever the ECE above says.",
        "`other` gathers every non-standard view and is the most heterogeneous class; its "
        "figures vary most between sites.",
    ]
    if facts.synthetic:
        points.append(
            "Synthetic phantom data: nothing here supports any clinical claim; retrain and "
            "re-evaluate on real, labelled scans before any use."
        )
    points += list(facts.extra_limitations)
    return "## Limitations\n\n" + "\n".join(f"- {point}" for point in points)


def _how_to_use(facts: CardFacts) -> str:
    uri = facts.storage_uri
    name = facts.model_name
    return f"""## How to use

KServe's TorchServe runtime serves this version from its storageUri, which holds:

```text
{uri}
├── model-store/{name}.mar      # TorchScript, handler, preprocessing, class names
└── config/config.properties    # TorchServe settings for KServe
```

```yaml
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: {name}
spec:
  predictor:
    model:
      modelFormat:
        name: pytorch
      protocolVersion: v1
      storageUri: {uri}
```

A V1 request carries one base64-encoded PNG or JPEG per instance:

```bash
printf '{{"instances": [{{"data": "%s"}}]}}' "$(base64 -w0 image.png)" > request.json
curl -s -H "Host: $SERVICE_HOSTNAME" -H "Content-Type: application/json" \\
  -d @request.json "http://$INGRESS_HOST/v1/models/{name}:predict"
```

and gets, per instance, the plane and the softmax over the classes in output order:

```json
{_example_response(facts.classes)}
```

The archived TorchScript divides its logits by T = {facts.temperature:.3f} (fit on the
validation split), so the probabilities it answers are the calibrated ones."""


def _in_domain(facts: CardFacts) -> tuple[str, Evaluation]:
    if facts.test is not None:
        return "test", facts.test
    return "validation", facts.validation


def _example_response(classes: Sequence[str]) -> str:
    shares = [0.9] + [round(0.1 / (len(classes) - 1), 3)] * (len(classes) - 1)
    answer = {"label": classes[0], "probabilities": dict(zip(classes, shares, strict=True))}
    return json.dumps({"predictions": [answer]})


def _score(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    return f"{value:.3f}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _value(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, float) and math.isnan(value):
        return "not set"
    return f"`{value}`"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([row(header), row(["---"] * len(header)), *(row(r) for r in rows)])
