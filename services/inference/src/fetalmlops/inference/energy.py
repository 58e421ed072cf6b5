"""The inference service's energy, accounted per window of serving: carbon per 1,000 inferences.

Every ``window_s`` the accountant closes a window: the energy CodeCarbon measured over it
(RAPL or NVML counters where readable, else its estimate from CPU load and TDP; the method is
named with every figure, see `fetalmlops.carbon.tracking`), and the requests and predictions
served in it per model version and device, counted from the prediction events on their way
out. One `InferenceEnergy` per version and device goes to `fetal.inference.energy`, the
window's energy shared among them by predictions; a window that served nothing is not sent.
The whole machine is measured: on a shared node the figure is an upper bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fetalmlops.carbon.tracking import tracked
from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.v1 import predictions_pb2

log = logging.getLogger(__name__)

JOULES_PER_KWH = 3.6e6
Stream = tuple[str, int, str]  # model name, version, compute device


@dataclass
class Tally:
    """Requests and predictions per stream since the window opened (thread-safe)."""

    requests: Counter[Stream] = field(default_factory=Counter)
    predictions: Counter[Stream] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, events: Sequence[predictions_pb2.PredictionMade]) -> None:
        """One request's events."""
        with self.lock:
            for stream in {_stream(event) for event in events}:
                self.requests[stream] += 1
            for event in events:
                self.predictions[_stream(event)] += 1

    def take(self) -> tuple[Counter[Stream], Counter[Stream]]:
        """The counts so far, and a fresh start."""
        with self.lock:
            taken = self.requests, self.predictions
            self.requests, self.predictions = Counter(), Counter()
        return taken


def accounts(
    instance: str,
    start: datetime,
    end: datetime,
    joules: float,
    method: str,
    requests: Counter[Stream],
    predictions: Counter[Stream],
) -> list[predictions_pb2.InferenceEnergy]:
    """The window's accounts: its energy shared among streams by their predictions."""
    total = sum(predictions.values())
    events = []
    for (model, version, device), served in sorted(predictions.items()):
        event = predictions_pb2.InferenceEnergy(
            account_id=f"{instance}/{int(start.timestamp() * 1e9)}/{model}/{version}/{device}",
            model_name=model,
            model_version=version,
            compute_device=device,
            energy_joules=joules * served / total,
            requests=requests[(model, version, device)],
            predictions=served,
            method=method,
        )
        event.window_start.FromDatetime(start)
        event.window_end.FromDatetime(end)
        events.append(event)
    return events


class Accountant:
    """Once started, closes a window every ``window_s`` until closed, publishing its accounts.
    Counts taken before `start` go into the first window."""

    def __init__(
        self,
        bus: Bus,
        topic: str,
        producer: str,
        instance: str,
        window_s: float,
        country_iso_code: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bus, self.topic, self.producer, self.instance = bus, topic, producer, instance
        self.window_s, self.country, self.clock = window_s, country_iso_code, clock
        self.tally, self.stop = Tally(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="energy", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Ends the current window (accounted like any other) and stops."""
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(60)

    def _run(self) -> None:
        while not self.stop.is_set():
            start, opened = self.clock(), time.monotonic()
            with tracked(self.country, project="fetalmlops-inference") as meter:
                self.stop.wait(max(0.0, self.window_s - (time.monotonic() - opened)))
            requests, predictions = self.tally.take()
            if meter.footprint is None or not predictions:
                continue
            joules = meter.footprint.energy_kwh * JOULES_PER_KWH
            for event in accounts(self.instance, start, self.clock(), joules,
                                  meter.footprint.source, requests, predictions):  # fmt: skip
                self._publish(event)

    def _publish(self, event: predictions_pb2.InferenceEnergy) -> None:
        try:
            publish_event(self.bus, self.topic, event.account_id, event, self.producer)
        except Exception as exc:  # the bus's own errors: an account is lost, serving goes on
            log.warning("energy account not published", extra={"error": type(exc).__name__})


def _stream(event: predictions_pb2.PredictionMade) -> Stream:
    return event.model_name, event.model_version, event.compute_device
