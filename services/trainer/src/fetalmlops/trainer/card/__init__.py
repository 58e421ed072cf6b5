"""The model card: what a clinical lead reads before a plane classifier version is promoted.

`model_card` is a pure function from the facts of one trained version (`facts`) to Markdown, in
the sections of Mitchell et al. 2019 ("Model Cards for Model Reporting") that apply here: what
the model is and what it learnt from (`description`), how well it does and where it fails
(`performance`), what it costs to run and to train (`resources`), and how to call it
(`serving`). The two figures are written beside the card by the caller, under the names
`CONFUSION_MATRIX` and `RELIABILITY_DIAGRAM`, and linked relatively so the card renders from the
object store, a repository or a registry UI alike.

Every metric is printed to three decimals, as the evaluation's own figures are; a missing value
is said in words, never as ``None`` or ``nan`` (`markdown`).
"""

from __future__ import annotations

from fetalmlops.trainer.card import description, performance, resources, serving
from fetalmlops.trainer.card.facts import CardFacts
from fetalmlops.trainer.card.performance import CONFUSION_MATRIX, RELIABILITY_DIAGRAM

__all__ = ["CONFUSION_MATRIX", "RELIABILITY_DIAGRAM", "CardFacts", "model_card"]


def model_card(facts: CardFacts) -> str:
    sections = [
        description.title(facts),
        description.details(facts),
        description.intended_use(facts),
        description.training_data(facts),
        performance.metrics(facts),
        performance.out_of_domain(facts),
        resources.efficiency(facts.efficiency),
        resources.carbon(facts.footprint),
        performance.limitations(facts),
        serving.how_to_use(facts),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
