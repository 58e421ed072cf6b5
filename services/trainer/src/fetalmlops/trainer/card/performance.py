"""How well the version does, and where it is expected to fail: metrics, out-of-domain results
and limitations, each figure as evaluated."""

from __future__ import annotations

from fetalmlops.trainer.card.facts import CardFacts
from fetalmlops.trainer.card.markdown import score, signed, table
from fetalmlops.trainer.evaluation import ECE_BINS, Evaluation

CONFUSION_MATRIX = "confusion_matrix.png"
RELIABILITY_DIAGRAM = "reliability.png"


def metrics(facts: CardFacts) -> str:
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
            score(evaluation.macro_f1),
            score(evaluation.balanced_accuracy),
            score(evaluation.accuracy),
            score(raw_ece),
            score(evaluation.ece),
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
        table(header, headline),
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
            score(of_class.precision),
            score(of_class.recall),
            score(of_class.f1),
            str(of_class.support),
        )
        for name, of_class in evaluation.per_class.items()
    ]
    return table(("Class", "Precision", "Recall", "F1", "Support"), rows)


def out_of_domain(facts: CardFacts) -> str:
    if not facts.out_of_domain:
        return ""
    reference_name, reference = _in_domain(facts)
    rows = [
        (
            f"`{cohort}`",
            str(evaluation.n),
            score(evaluation.macro_f1),
            signed(evaluation.macro_f1 - reference.macro_f1),
            score(evaluation.balanced_accuracy),
            score(evaluation.ece),
        )
        for cohort, evaluation in facts.out_of_domain.items()
    ]
    header = ("Cohort/device", "Images", "Macro-F1", f"Δ vs {reference_name}", "Balanced acc.")
    return "\n".join(
        [
            "## Out-of-domain",
            "",
            f"Cohorts or devices absent from the training snapshot, against the in-domain "
            f"{reference_name} macro-F1 of {score(reference.macro_f1)}.",
            "",
            table((*header, "ECE"), rows),
        ]
    )


def limitations(facts: CardFacts) -> str:
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
            f"`{cohort}` {score(evaluation.macro_f1)}"
            for cohort, evaluation in facts.out_of_domain.items()
        )
        points.append(
            f"Measured on other cohorts/devices, macro-F1 was {drops}, against "
            f"{score(reference.macro_f1)} in domain (see Out-of-domain)."
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


def _in_domain(facts: CardFacts) -> tuple[str, Evaluation]:
    if facts.test is not None:
        return "test", facts.test
    return "validation", facts.validation
