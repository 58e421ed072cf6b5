"""Prediction events leave the request path: a bounded queue and one publishing thread.

A clinician's answer must not wait for, or fail with, the monitoring pipeline: `submit` only
enqueues, and a thread publishes each event with acks=all under the request's trace context.
When Kafka is down longer than the queue lasts, events are dropped and counted
(``fetalmlops_inference_events_dropped_total``), never the prediction itself. `close` drains
what is queued before the process exits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context

from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.inference.metrics import EVENTS_DROPPED
from fetalmlops.v1 import predictions_pb2

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000


@dataclass(frozen=True)
class Pending:
    events: Sequence[predictions_pb2.PredictionMade]
    context: otel_context.Context


class PredictionPublisher:
    def __init__(
        self, bus: Bus, topic: str, producer: str, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self.bus, self.topic, self.producer = bus, topic, producer
        self.pending: queue.Queue[Pending | None] = queue.Queue(maxsize=capacity)
        self.thread = threading.Thread(target=self._publish_all, name="predictions", daemon=True)
        self.thread.start()

    def submit(self, events: Sequence[predictions_pb2.PredictionMade]) -> None:
        """Queues one request's events; never blocks."""
        try:
            self.pending.put_nowait(Pending(events, otel_context.get_current()))
        except queue.Full:
            EVENTS_DROPPED.labels("queue_full").inc(len(events))
            log.warning("prediction events dropped: the queue is full", extra={"n": len(events)})

    def close(self, timeout_s: float = 10.0) -> None:
        """Publishes what is queued, then stops the thread."""
        self.pending.put(None)
        self.thread.join(timeout_s)

    def _publish_all(self) -> None:
        while (item := self.pending.get()) is not None:
            token = otel_context.attach(item.context)
            try:
                for event in item.events:
                    self._publish(event)
            finally:
                otel_context.detach(token)

    def _publish(self, event: predictions_pb2.PredictionMade) -> None:
        try:
            publish_event(self.bus, self.topic, event.request_id, event, self.producer)
        except Exception as exc:  # the bus's own errors: Kafka unreachable, timeouts
            EVENTS_DROPPED.labels("publish_failed").inc()
            log.warning(
                "prediction event not published",
                extra={"error": f"{type(exc).__name__}: {exc}", "topic": self.topic},
            )
