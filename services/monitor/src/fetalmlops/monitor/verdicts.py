"""A window's verdict: every drift test, one piece of evidence for the alarm, and the alarm
rule each model version is calibrated to.

Six tests look at one window; the alarm takes one number per window, the Bonferroni-adjusted
smallest p-value of the tests that could decide (min(1, T·min p)), and names the test that gave
it, so an alarm says which statistic moved. The alarm's threshold is calibrated on that same
number, over no-shift windows split off the version's reference (`drift.alarm`), so the
multiple tests and their dependence are priced in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fetalmlops.monitor.drift import run_all
from fetalmlops.monitor.drift.alarm import AlarmRule, calibrate, null_p_values
from fetalmlops.monitor.drift.base import Outcome, Reference, Window, decided


@dataclass(frozen=True)
class Verdict:
    outcomes: dict[str, Outcome]
    p_value: float  # the window's evidence
    strongest: str | None  # the test that gave it; None when no test could decide

    def outcomes_dict(self) -> dict[str, Any]:
        return {
            name: {
                "statistic": None if outcome.statistic != outcome.statistic else outcome.statistic,
                "p_value": outcome.p_value,
                "threshold": outcome.threshold,
                "drifted": outcome.drifted,
                **(
                    {"undecided": outcome.detail["undecided"]}
                    if "undecided" in outcome.detail
                    else {}
                ),
            }
            for name, outcome in self.outcomes.items()
        }


def verdict(reference: Reference, window: Window) -> Verdict:
    outcomes = run_all(reference, window)
    able = {name: o for name, o in outcomes.items() if "undecided" not in o.detail}
    if not able:
        return Verdict(outcomes, 1.0, None)
    strongest = min(able, key=lambda name: able[name].p_value)
    return Verdict(outcomes, min(1.0, len(able) * able[strongest].p_value), strongest)


def evidence(found: Verdict) -> Outcome:
    """The verdict as one outcome: what the alarm is calibrated on and stepped with."""
    return decided("combined", found.p_value, found.p_value, 1.0, strongest=found.strongest)


def combined(reference: Reference, window: Window, alpha: float = 1.0) -> Outcome:
    return evidence(verdict(reference, window))


def alarm_rule(
    reference: Reference, window_size: int, windows: int, false_alarms_per_10k: float
) -> AlarmRule:
    """The rule whose false alarm episodes, with nothing changed, are at most
    ``false_alarms_per_10k`` per 10,000 predictions in windows of ``window_size``."""
    budget = false_alarms_per_10k * window_size / 10_000
    return calibrate(null_p_values(reference, combined, window_size, windows), budget)
