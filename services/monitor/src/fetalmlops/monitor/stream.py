"""The monitor's consumers: predictions into drift windows, feedback, the versions it watches,
and the retraining requests its alarms make.

Each handler writes its rows in one transaction and returns; the consumer commits the offset
only then, so nothing is lost. A replay is idempotent: a prediction or feedback already kept is
not kept again, windows are cut in arrival order from the predictions no window has taken (and
a prediction names its window in the same transaction), and an alarm episode's request has a
key made of the version, segment and episode, so it is written once. Requests are an outbox:
written with the window that fired, published after the commit, marked published after that;
a crash between the two publishes it on the next event, under the same key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from sqlalchemy import ColumnElement, Engine, select, update
from sqlalchemy.orm import Session

from fetalmlops.common import model_version
from fetalmlops.common.bus import Record, Rejected, publish_event, read_event
from fetalmlops.common.bus.base import Headers
from fetalmlops.common.clients import Clients
from fetalmlops.common.db import (
    DriftWindow,
    EnergyAccount,
    Feedback,
    MonitoredVersion,
    ObservedPrediction,
    RetrainingRequest,
    session_scope,
)
from fetalmlops.common.db.audit import append
from fetalmlops.common.db.columns import utcnow
from fetalmlops.common.planes import plane_from_proto
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import ObjectNotFound
from fetalmlops.common.telemetry.tracing import extract, inject
from fetalmlops.monitor import metrics
from fetalmlops.monitor.drift.alarm import AlarmRule, AlarmState, step
from fetalmlops.monitor.drift.base import Reference
from fetalmlops.monitor.estimate import estimated
from fetalmlops.monitor.rollouts import Rollouts
from fetalmlops.monitor.samples import (
    NoSample,
    observed,
    reference_of,
    segment_rows,
    window_of,
    windows,
)
from fetalmlops.monitor.settings import SERVICE_NAME, MonitorSettings
from fetalmlops.monitor.verdicts import alarm_rule, evidence, verdict
from fetalmlops.v1 import feedback_pb2, models_pb2, predictions_pb2, training_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stream:
    """The predictions of one model version on one scanner segment: what a window cuts."""

    model_name: str
    version: int
    segment: str

    @classmethod
    def of(cls, row: ObservedPrediction) -> Stream:
        return cls(row.model_name, row.model_version, row.segment)

    def rows(self) -> tuple[ColumnElement[bool], ...]:
        return (
            ObservedPrediction.model_name == self.model_name,
            ObservedPrediction.model_version == self.version,
            ObservedPrediction.segment == self.segment,
        )


@dataclass(frozen=True)
class Watched:
    """A version's drift reference and calibrated alarm, as the tests take them."""

    reference: Reference
    rule: AlarmRule


@dataclass
class Monitor:
    settings: Settings
    own: MonitorSettings
    clients: Clients
    # Nothing waits in the outbox: known after the first look (which finds what a crash left)
    # until a window fires, so a prediction costs no outbox query.
    outbox_empty: bool = field(default=False, init=False)
    # Each stream's parsed reference and rule (None: its version has none), made once.
    versions: dict[tuple[str, int, str], Watched | None] = field(default_factory=dict, init=False)
    # The change-control plan's rollouts (None: no plan), and when predictions last reviewed.
    rollouts: Rollouts | None = None
    reviewed_at: float = field(default=-math.inf, init=False)

    @property
    def engine(self) -> Engine:
        return self.clients.engine

    # --- predictions -------------------------------------------------------------------------

    def on_prediction(self, record: Record) -> None:
        self.on_predictions([record])

    def on_predictions(self, records: Sequence[Record]) -> None:
        """Predictions kept in one transaction with every window they fill (the consumer's
        batch handler; a batch that raises is handled again a record at a time)."""
        rows = [observed(prediction_of(record)) for record in records]
        headers = {
            row.prediction_id: record.headers for row, record in zip(rows, records, strict=True)
        }
        with session_scope(self.engine) as session:
            fresh = _unknown(session, rows)
            session.add_all(fresh)
            session.flush()
            for stream in dict.fromkeys(Stream.of(row) for row in fresh):
                watched = self.watched(session, stream)
                if watched is not None:
                    self.close_windows(session, stream, watched, headers)
        for row in fresh:
            metrics.PREDICTIONS.labels(row.model_name, str(row.model_version)).inc()
        self.publish_requests()
        if fresh and time.monotonic() - self.reviewed_at >= self.own.rollout_review_seconds:
            self.review_rollouts()

    def review_rollouts(self) -> None:
        if self.rollouts is not None:
            self.reviewed_at = time.monotonic()
            self.rollouts.review()

    def watched(self, session: Session, stream: Stream) -> Watched | None:
        """The stream's reference and alarm rule (None: its version has none), made once per
        process: a version's reference is written with its row and never changes. None too
        while the version is unknown.

        A scanner segment the reference holds enough rows of (`samples.segment_rows`) is
        compared with those rows, under an alarm calibrated on them (seconds, the same
        deterministic calibration after every restart); any other with the whole reference,
        under the rule calibrated when the version was announced."""
        key = (stream.model_name, stream.version, stream.segment)
        if key not in self.versions:
            version = session.get(MonitoredVersion, (stream.model_name, stream.version))
            if version is None:
                return None
            self.versions[key] = self.watching(version, stream.segment)
        return self.versions[key]

    def watching(self, version: MonitoredVersion, segment: str) -> Watched | None:
        document = version.reference
        if document is None or version.alarm_rule is None:
            return None
        own = self.own
        if segment_rows(document, segment, 2 * own.window_size) is None:
            return Watched(reference_of(document), AlarmRule(**version.alarm_rule))
        reference = reference_of(document, segment, 2 * own.window_size)
        rule = alarm_rule(
            reference, own.window_size, own.calibration_windows, own.false_alarms_per_10k
        )
        return Watched(reference, rule)

    def close_windows(
        self,
        session: Session,
        stream: Stream,
        watched: Watched,
        headers: Mapping[str, Headers] | None = None,
    ) -> None:
        """Every full window (by count or by time) of the stream's predictions no window has
        taken yet. Which are full is read from their times alone; only their rows are loaded.
        ``headers`` are the records' of the predictions just received, whose trace an alarm
        carries on."""
        pending = session.execute(
            select(ObservedPrediction.seq, ObservedPrediction.occurred_at)
            .where(*stream.rows(), ObservedPrediction.window_id.is_(None))
            .order_by(ObservedPrediction.seq)
        ).all()
        cuts = windows(pending, self.own.window_size, self.own.window_seconds)
        if not cuts:
            return
        taken = [row.seq for cut in cuts for row in cut]
        rows = {
            row.seq: row
            for row in session.scalars(
                select(ObservedPrediction).where(ObservedPrediction.seq.in_(taken))
            )
        }
        last = self.last_window(session, stream)
        for cut in cuts:
            window_rows = [rows[row.seq] for row in cut]
            # The trace of the prediction that filled the window; else the current one.
            carried = (headers or {}).get(window_rows[-1].prediction_id)
            context = extract(carried) if carried else None
            last = self.close(session, stream, watched, window_rows, last, context)

    def close(
        self,
        session: Session,
        stream: Stream,
        watched: Watched,
        rows: Sequence[ObservedPrediction],
        last: DriftWindow | None,
        context: Context | None = None,
    ) -> DriftWindow:
        reference, rule = watched.reference, watched.rule
        window_rows = window_of(rows, reference.classes)
        found = verdict(reference, window_rows)
        state = AlarmState() if last is None else _state(last)
        state, fired = step(rule, state, evidence(found))
        window = DriftWindow(
            model_name=stream.model_name,
            model_version=stream.version,
            segment=stream.segment,
            number=state.windows,
            size=len(rows),
            first_at=rows[0].occurred_at,
            last_at=rows[-1].occurred_at,
            outcomes=found.outcomes_dict(),
            p_value=found.p_value,
            estimate=estimated(window_rows.probabilities, reference.classes).to_dict(),
            cusum=state.cusum,
            alarm_active=state.active,
            episode=state.episode,
            fired=fired,
        )
        session.add(window)
        session.flush()
        session.execute(  # one statement for the window's rows, not one each
            update(ObservedPrediction)
            .where(ObservedPrediction.seq.in_([row.seq for row in rows]))
            .values(window_id=window.id),
            execution_options={"synchronize_session": False},
        )
        metrics.observe_window(window, found.outcomes)
        if fired:
            with trace.get_tracer(__name__).start_as_current_span("drift alarm", context=context):
                request = self.request_for(window, found.strongest, rule, found.outcomes)
            session.add(request)
            append(
                session,
                SERVICE_NAME,
                "drift alarm",
                f"model:{stream.model_name}:v{stream.version}",
                {"segment": stream.segment, "episode": window.episode,
                 "retraining_request": request.request_id, "automatic": request.automatic,
                 "reference_version": stream.version, **request.reason},
            )  # fmt: skip
            self.outbox_empty = False
        return window

    @staticmethod
    def last_window(session: Session, stream: Stream) -> DriftWindow | None:
        return session.scalars(
            select(DriftWindow)
            .where(
                DriftWindow.model_name == stream.model_name,
                DriftWindow.model_version == stream.version,
                DriftWindow.segment == stream.segment,
            )
            .order_by(DriftWindow.number.desc())
            .limit(1)
        ).first()

    def request_for(
        self, window: DriftWindow, test: str | None, rule: AlarmRule, outcomes: dict[str, Any]
    ) -> RetrainingRequest:
        identity = (
            f"{window.model_name}\x1f{window.model_version}\x1f{window.segment}\x1f{window.episode}"
        )
        strongest = outcomes.get(test) if test else None
        reason = {
            "test": test or "",
            "statistic": 0.0
            if strongest is None or strongest.statistic != strongest.statistic
            else strongest.statistic,
            "p_value": window.p_value,
            "window": window.number,
            "cusum": window.cusum,
            "threshold": rule.threshold,
        }
        log.warning(
            "drift alarm",
            extra={"model": window.model_name, "model_version": window.model_version,
                   "segment": window.segment, "episode": window.episode, "test": test},
        )  # fmt: skip
        metrics.ALARMS.labels(window.model_name, str(window.model_version), window.segment).inc()
        return RetrainingRequest(
            request_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
            model_name=window.model_name,
            model_version=window.model_version,
            segment=window.segment,
            episode=window.episode,
            reason=reason,
            traceparent=dict(inject()).get("traceparent", b"").decode() or None,
            automatic=self.own.auto_retrain,
        )

    def publish_requests(self) -> None:
        """Publish the requests written and not yet published (the outbox), oldest first."""
        if self.outbox_empty:
            return
        with session_scope(self.engine) as session:
            waiting = session.scalars(
                select(RetrainingRequest)
                .where(RetrainingRequest.automatic, RetrainingRequest.published_at.is_(None))
                .order_by(RetrainingRequest.created_at)
            ).all()
            for request in waiting:
                self.publish(request)
                request.published_at = utcnow()
        self.outbox_empty = True

    def publish(self, request: RetrainingRequest) -> None:
        headers = [("traceparent", request.traceparent.encode())] if request.traceparent else []
        tracer = trace.get_tracer(__name__)
        with tracer.start_as_current_span(
            "drift alarm: retraining requested", context=extract(headers)
        ):
            publish_event(
                self.clients.bus,
                self.settings.topics.training_requested,
                request.request_id,
                training_event(request),
                self.settings.service_name,
            )

    # --- feedback ----------------------------------------------------------------------------

    def on_feedback(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, feedback_pb2.FeedbackGiven):
            raise Rejected(f"expected FeedbackGiven, got {type(event).__name__}")
        plane = plane_from_proto(event.true_plane)
        if not event.prediction_id or plane is None:
            raise Rejected("the feedback names no prediction or no plane this build knows")
        with session_scope(self.engine) as session:
            given = session.get(Feedback, event.prediction_id)
            if given is None:
                session.add(
                    Feedback(
                        prediction_id=event.prediction_id,
                        true_plane=plane,
                        reviewer=event.reviewer or "unknown",
                        given_at=event.meta.occurred_at.ToDatetime(tzinfo=UTC),
                    )
                )
            else:  # a correction: the latest reading stands
                given.true_plane, given.reviewer = plane, event.reviewer or given.reviewer
        metrics.FEEDBACK.inc()
        self.review_rollouts()

    # --- energy ------------------------------------------------------------------------------

    def on_energy(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, predictions_pb2.InferenceEnergy):
            raise Rejected(f"expected InferenceEnergy, got {type(event).__name__}")
        if not event.account_id or event.energy_joules < 0 or event.predictions < 0:
            raise Rejected("the energy account has no id, or a negative figure")
        with session_scope(self.engine) as session:
            if session.get(EnergyAccount, event.account_id) is None:
                session.add(
                    EnergyAccount(
                        account_id=event.account_id,
                        model_name=event.model_name,
                        model_version=event.model_version,
                        compute_device=event.compute_device,
                        window_start=event.window_start.ToDatetime(tzinfo=UTC),
                        window_end=event.window_end.ToDatetime(tzinfo=UTC),
                        energy_joules=event.energy_joules,
                        requests=event.requests,
                        predictions=event.predictions,
                        method=event.method,
                    )
                )

    # --- model versions ----------------------------------------------------------------------

    def on_model(self, record: Record) -> None:
        event = read_event(record)
        if not isinstance(event, models_pb2.ModelTrained | models_pb2.ModelPromoted):
            raise Rejected(f"expected ModelTrained or ModelPromoted, got {type(event).__name__}")
        self.ensure_watched(event.model_name, event.version, event.storage_uri)
        with session_scope(self.engine) as session:
            version = session.get(MonitoredVersion, (event.model_name, event.version))
            assert version is not None  # written by ensure_watched
            if isinstance(event, models_pb2.ModelPromoted):
                version.promoted_at = event.meta.occurred_at.ToDatetime(tzinfo=UTC)
                return
            version.energy_kwh = event.energy_kwh or None
            version.emissions_kg_co2e = event.emissions_kg_co2e or None
            waiting = session.scalars(
                select(ObservedPrediction.segment)
                .where(
                    ObservedPrediction.model_name == version.model_name,
                    ObservedPrediction.model_version == version.version,
                    ObservedPrediction.window_id.is_(None),
                )
                .distinct()
            ).all()
            for segment in waiting:  # predictions that came before their version
                stream = Stream(event.model_name, event.version, segment)
                watched = self.watched(session, stream)
                if watched is not None:
                    self.close_windows(session, stream, watched)
        self.publish_requests()
        if event.HasField("gate") and self.rollouts is not None:
            self.rollouts.on_trained(event)

    def ensure_watched(self, model_name: str, number: int, storage_uri: str) -> None:
        """The version's row, written once; its reference is read and its alarm calibrated
        (seconds) outside any transaction."""
        with session_scope(self.engine) as session:
            if session.get(MonitoredVersion, (model_name, number)) is not None:
                return
        version = self.new_version(model_name, number, storage_uri)
        with session_scope(self.engine) as session:
            if session.get(MonitoredVersion, (model_name, number)) is None:
                session.add(version)

    def new_version(self, model_name: str, number: int, storage_uri: str) -> MonitoredVersion:
        """The version's row, its reference read from the store and its alarm calibrated on it
        (a version without a usable reference is watched for performance and carbon only)."""
        document = self.drift_reference(storage_uri)
        rule = None
        if document is not None:
            try:
                reference = reference_of(document)
                rule = alarm_rule(
                    reference,
                    self.own.window_size,
                    self.own.calibration_windows,
                    self.own.false_alarms_per_10k,
                )
            except (NoSample, ValueError) as exc:
                log.warning(
                    "no drift alarm for this version",
                    extra={"model": model_name, "model_version": number, "reason": str(exc)},
                )
        return MonitoredVersion(
            model_name=model_name,
            version=number,
            storage_uri=storage_uri,
            reference=document,
            alarm_rule=None
            if rule is None
            else {"threshold": rule.threshold, "allowance": rule.allowance, "budget": rule.budget},
        )

    def drift_reference(self, storage_uri: str) -> dict[str, Any] | None:
        bucket, _, prefix = storage_uri.removeprefix("s3://").partition("/")
        key = prefix.rstrip("/") + "/" + model_version.DRIFT_REFERENCE
        try:
            document: dict[str, Any] = json.loads(self.clients.store.get(bucket, key))
        except ObjectNotFound:
            return None
        return document


def training_event(request: RetrainingRequest) -> training_pb2.TrainingRequested:
    reason = request.reason
    return training_pb2.TrainingRequested(
        request_id=request.request_id,
        model_name=request.model_name,
        reason="drift",
        drift=training_pb2.DriftAlarm(
            model_name=request.model_name,
            model_version=request.model_version,
            segment=request.segment,
            episode=request.episode,
            window=reason["window"],
            test=reason["test"],
            statistic=reason["statistic"],
            p_value=reason["p_value"],
            cusum=reason["cusum"],
            threshold=reason["threshold"],
        ),
    )


def prediction_of(record: Record) -> predictions_pb2.PredictionMade:
    event = read_event(record)
    if not isinstance(event, predictions_pb2.PredictionMade):
        raise Rejected(f"expected PredictionMade, got {type(event).__name__}")
    if not event.prediction_id or not event.model_name:
        raise Rejected("the prediction names no prediction id or no model")
    return event


def _unknown(session: Session, rows: Sequence[ObservedPrediction]) -> list[ObservedPrediction]:
    """The rows whose prediction is not kept yet, each once (a replay may repeat one)."""
    ids = {row.prediction_id for row in rows}
    seen = set(
        session.scalars(
            select(ObservedPrediction.prediction_id).where(
                ObservedPrediction.prediction_id.in_(ids)
            )
        )
    )
    fresh = []
    for row in rows:
        if row.prediction_id not in seen:
            seen.add(row.prediction_id)
            fresh.append(row)
    return fresh


def _state(window: DriftWindow) -> AlarmState:
    return AlarmState(
        cusum=window.cusum,
        active=window.alarm_active,
        episode=window.episode,
        windows=window.number,
    )
