"""The catalog, registry, report and audit tables (DESIGN.md §2, "Postgres").

No table holds PHI: images are known by keyed pseudonyms, patients only by a pseudonym, and
object keys are content-addressed. Raw identifiers stay in the `fetal-raw` bucket.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fetalmlops.common.db.columns import JSONDocument, UtcDateTime, string_enum, utcnow
from fetalmlops.common.planes import BrainPlane, Plane

# Explicit names for every constraint and index, so a migration written today names them the
# same way autogenerate and both databases will tomorrow.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSONDocument}


def _created_at() -> Mapped[datetime]:
    # The Python default keeps microseconds and the time zone; the server default covers rows
    # written by plain SQL (operators, other tools).
    return mapped_column(default=utcnow, server_default=sa.func.now())


class ModelStage(StrEnum):
    CANDIDATE = "candidate"
    CHALLENGER = "challenger"  # passed a change-control plan's gate: may meet live traffic
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"  # failed the gate, or was rolled back: never served again


class RolloutPhase(StrEnum):
    """Where a challenger stands beside its champion (a change-control plan's rollout)."""

    SHADOW = "shadow"  # scores every request, answers none
    CANARY = "canary"  # answers a fraction of requests
    AWAITING_APPROVAL = "awaiting_approval"  # passed the canary; waits for the named people
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"

    @property
    def active(self) -> bool:
        return self in (RolloutPhase.SHADOW, RolloutPhase.CANARY, RolloutPhase.AWAITING_APPROVAL)


class ReportKind(StrEnum):
    DRIFT = "drift"
    PERFORMANCE = "performance"
    CARBON = "carbon"


class IngestChannel(StrEnum):
    """How an image reached the raw zone (proto `fetalmlops.v1.IngestChannel`)."""

    KAFKA = "kafka"
    STOW_RS = "stow_rs"
    C_STORE = "c_store"
    REST = "rest"
    IMPORT = "import"


class IngestRecord(Base):
    """One raw object in `fetal-raw`, keyed by its content hash. Holds no PHI: no UIDs, no
    names, no file names — only what ingest checked and when it announced the image."""

    __tablename__ = "ingest_records"

    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    raw_key: Mapped[str] = mapped_column(sa.String(1024))
    media_type: Mapped[str] = mapped_column(sa.String(64))
    channel: Mapped[IngestChannel] = mapped_column(string_enum(IngestChannel, "ingest_channel"))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    modality: Mapped[str | None] = mapped_column(sa.String(16))
    sop_class_uid: Mapped[str | None] = mapped_column(sa.String(64))
    rows: Mapped[int]
    columns: Mapped[int]
    frames: Mapped[int]
    received_at: Mapped[datetime] = _created_at()
    # Set once fetal.images.received is acknowledged; a record without it is announced again.
    announced_at: Mapped[datetime | None]


class Image(Base):
    """A de-identified image in the `fetal-anonymized` bucket: one per source instance.

    A source instance may reach the raw zone more than once (re-sent in another transfer
    syntax, or over another channel): each raw copy is an ``ImageCopy`` of the one image, and
    ``sop_instance_uid`` (the de-identified one, a keyed pseudonym of the source's) is what
    recognises it. The image's id is the pseudonym of the raw copy it was first made from.
    """

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # keyed HMAC pseudonym
    sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)  # of the anonymized object
    # The pseudonymous SOP Instance UID (``2.25.``…); none for PNG/JPEG, which have no instance.
    sop_instance_uid: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    object_key: Mapped[str] = mapped_column(sa.String(1024))
    canonical_key: Mapped[str | None] = mapped_column(sa.String(1024))
    patient_pseudonym: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    device_manufacturer: Mapped[str | None] = mapped_column(sa.String(128))
    device_model: Mapped[str | None] = mapped_column(sa.String(128))
    pixel_spacing_mm: Mapped[float | None]
    rows: Mapped[int]
    columns: Mapped[int]
    cohort: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    created_at: Mapped[datetime] = _created_at()
    # Set once fetal.images.anonymized is acknowledged; an image without it is announced again.
    published_at: Mapped[datetime | None]

    # A label names its image by the id of any of its copies (a raw sha256's pseudonym).
    labels: Mapped[list[Label]] = relationship(
        secondary="image_copies",
        primaryjoin="Image.id == foreign(ImageCopy.image_id)",
        secondaryjoin="foreign(ImageCopy.copy_id) == Label.image_id",
        viewonly=True,
    )


class ImageCopy(Base):
    """A raw copy of an image's source instance, by the pseudonym of its raw sha256 (the id a
    label given that sha256 names). The copy an image was made from has the image's own id."""

    __tablename__ = "image_copies"

    copy_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    image_id: Mapped[str] = mapped_column(
        sa.ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = _created_at()


class Label(Base):
    """One annotator's reading of an image; an image may carry several.

    No foreign key: a label may arrive before the anonymizer has catalogued its image (the id
    is the pseudonym of a raw copy's sha256, known to both), and snapshots join the two
    through ``image_copies``: the copy a label names may be a second copy of an image.
    """

    __tablename__ = "labels"
    __table_args__ = (sa.UniqueConstraint("image_id", "annotator"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    plane: Mapped[Plane] = mapped_column(string_enum(Plane, "plane"))
    brain_plane: Mapped[BrainPlane | None] = mapped_column(string_enum(BrainPlane, "brain_plane"))
    annotator: Mapped[str] = mapped_column(sa.String(128))  # pseudonymous, never a name
    created_at: Mapped[datetime] = _created_at()

    image: Mapped[Image | None] = relationship(
        secondary="image_copies",
        primaryjoin="Label.image_id == foreign(ImageCopy.copy_id)",
        secondaryjoin="foreign(ImageCopy.image_id) == Image.id",
        viewonly=True,
        uselist=False,
    )


class DatasetSnapshot(Base):
    """An immutable manifest in `fetal-datasets` that a model was trained on."""

    __tablename__ = "dataset_snapshots"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    manifest_uri: Mapped[str] = mapped_column(sa.String(1024))
    content_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    split: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. fractions per split
    split_seed: Mapped[int]
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)  # per split and class
    created_at: Mapped[datetime] = _created_at()


class ModelVersion(Base):
    """A registered model version; at most one per model is in production."""

    __tablename__ = "model_versions"
    __table_args__ = (
        sa.UniqueConstraint("model_name", "version"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        # A partial unique index lets the database, not just the registry code, refuse a
        # second production version when two promotions race.
        sa.Index(
            "uq_model_versions_one_production",
            "model_name",
            unique=True,
            sqlite_where=sa.text("stage = 'production'"),
            postgresql_where=sa.text("stage = 'production'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    version: Mapped[int]
    stage: Mapped[ModelStage] = mapped_column(
        string_enum(ModelStage, "model_stage"), default=ModelStage.CANDIDATE
    )
    backbone: Mapped[str | None] = mapped_column(sa.String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    storage_uri: Mapped[str] = mapped_column(sa.String(1024))  # KServe storageUri prefix
    artifact_uri: Mapped[str | None] = mapped_column(sa.String(1024))  # the .mar itself
    energy_kwh: Mapped[float | None]
    emissions_kg_co2e: Mapped[float | None]
    drift_reference: Mapped[dict[str, Any] | None]
    snapshot_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("dataset_snapshots.id"), index=True
    )
    # Names the run (snapshot, model, configuration): a restarted Job finds what it registered.
    training_run: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    recipe: Mapped[dict[str, Any] | None]  # the run's configuration: what a retrain repeats
    parent_version: Mapped[int | None]  # the version whose drift alarm this one answers
    gate: Mapped[dict[str, Any] | None]  # a change-control plan's verdict, with its evidence
    created_at: Mapped[datetime] = _created_at()
    promoted_at: Mapped[datetime | None]

    snapshot: Mapped[DatasetSnapshot | None] = relationship()


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(sa.ForeignKey("model_versions.id"), index=True)
    target: Mapped[str] = mapped_column(sa.String(128))  # e.g. kserve/<namespace>/<service>
    endpoint: Mapped[str | None] = mapped_column(sa.String(1024))
    deployed_at: Mapped[datetime] = _created_at()

    model_version: Mapped[ModelVersion] = relationship()


class Report(Base):
    """A drift, performance or carbon report written by the monitor."""

    __tablename__ = "reports"
    __table_args__ = (
        sa.CheckConstraint(
            "window_start IS NULL OR window_end IS NULL OR window_start <= window_end",
            name="window_order",
        ),
        sa.Index("ix_reports_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[ReportKind] = mapped_column(string_enum(ReportKind, "report_kind"))
    model_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("model_versions.id"), index=True
    )
    window_start: Mapped[datetime | None]
    window_end: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = _created_at()

    model_version: Mapped[ModelVersion | None] = relationship()


class AuditEntry(Base):
    """Who did what to which subject, hash-chained to the entry before it: written only by
    `fetalmlops.common.db.audit.append`; details must stay PHI-free like every other table."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)
    actor: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[str] = mapped_column(sa.String(64))
    subject: Mapped[str] = mapped_column(sa.String(512))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class MonitoredVersion(Base):
    """A model version the monitor watches: its drift reference (copied from the version's
    `drift_reference.json` when announced) and the alarm rule calibrated on it."""

    __tablename__ = "monitored_versions"

    model_name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    storage_uri: Mapped[str] = mapped_column(sa.String(1024))
    reference: Mapped[dict[str, Any] | None]
    alarm_rule: Mapped[dict[str, Any] | None]  # threshold, allowance, budget
    energy_kwh: Mapped[float | None]  # of its training run (CodeCarbon)
    emissions_kg_co2e: Mapped[float | None]
    promoted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()


class ObservedPrediction(Base):
    """One served prediction as the monitor keeps it: PHI-free by construction (the event's
    probabilities, image statistics, projected embedding and scanner model, never a picture).
    ``window_id`` is set once a drift window has taken it."""

    __tablename__ = "observed_predictions"
    __table_args__ = (
        sa.Index("ix_observed_predictions_stream", "model_name", "model_version", "segment"),
        # The rows no window has taken yet, which every prediction looks up.
        sa.Index(
            "ix_observed_predictions_pending",
            "model_name",
            "model_version",
            "segment",
            "seq",
            sqlite_where=sa.text("window_id IS NULL"),
            postgresql_where=sa.text("window_id IS NULL"),
        ),
    )

    seq: Mapped[int] = mapped_column(primary_key=True)  # arrival order: windows follow it
    prediction_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[int]
    segment: Mapped[str] = mapped_column(sa.String(256))  # "manufacturer/model", or "unknown"
    predicted: Mapped[str] = mapped_column(sa.String(64))
    probabilities: Mapped[dict[str, Any]]  # plane -> probability
    image_stats: Mapped[dict[str, Any]]
    embedding: Mapped[dict[str, Any]]  # {"values": [...]}
    compute_device: Mapped[str] = mapped_column(sa.String(256), default="")
    # The side of a rollout that made it ("champion", "challenger", "shadow"; "" from before
    # rollouts), and for a shadow the prediction the champion answered the same image with.
    arm: Mapped[str] = mapped_column(sa.String(16), default="", server_default="")
    shadow_of: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    # Canary: the challenger was chosen for the request, failed, and the champion answered.
    challenger_failed: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    latency_ms: Mapped[float | None]  # request received to answer ready (None from before)
    occurred_at: Mapped[datetime]
    window_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("drift_windows.id", ondelete="SET NULL"), index=True
    )


class Feedback(Base):
    """A clinician's true plane for a served prediction; it may arrive before the prediction
    (the two join by ``prediction_id`` whenever both are known)."""

    __tablename__ = "feedback"

    prediction_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    true_plane: Mapped[Plane] = mapped_column(string_enum(Plane, "true_plane"))
    reviewer: Mapped[str] = mapped_column(sa.String(128))  # pseudonymous
    given_at: Mapped[datetime]


class DriftWindow(Base):
    """One closed window of a stream (model version x scanner segment): every test's outcome,
    the combined evidence, and the alarm's state after it."""

    __tablename__ = "drift_windows"
    __table_args__ = (sa.UniqueConstraint("model_name", "model_version", "segment", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[int]
    segment: Mapped[str] = mapped_column(sa.String(256))
    number: Mapped[int]  # 1, 2, … within the stream
    size: Mapped[int]
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    outcomes: Mapped[dict[str, Any]]  # test -> statistic, p_value, threshold, drifted
    p_value: Mapped[float]  # the window's evidence: the Bonferroni-adjusted smallest p-value
    estimate: Mapped[dict[str, Any] | None]  # label-free performance (CBPE)
    cusum: Mapped[float]
    alarm_active: Mapped[bool]
    episode: Mapped[int]
    fired: Mapped[bool]  # an alarm episode started with this window
    created_at: Mapped[datetime] = _created_at()


class EnergyAccount(Base):
    """One window of the inference service's energy, for one model version and device."""

    __tablename__ = "energy_accounts"

    account_id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[int]
    compute_device: Mapped[str] = mapped_column(sa.String(256))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    energy_joules: Mapped[float]
    requests: Mapped[int]
    predictions: Mapped[int]
    method: Mapped[str] = mapped_column(sa.String(256))


class RetrainingRequest(Base):
    """What an alarm episode asked for: one row per episode (its id is the request's key), and
    when the request was published; unpublished with auto-retraining off (a recommendation)."""

    __tablename__ = "retraining_requests"

    request_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    model_version: Mapped[int]
    segment: Mapped[str] = mapped_column(sa.String(256))
    episode: Mapped[int]
    reason: Mapped[dict[str, Any]]
    traceparent: Mapped[str | None] = mapped_column(sa.String(64))
    automatic: Mapped[bool]
    published_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()


class Rollout(Base):
    """A challenger's way to production beside its champion, under a change-control plan: one
    row per challenger, its phase, and the ``sequence`` of the `fetal.models.rollout` state it
    last published (a replica ignores an older one)."""

    __tablename__ = "rollouts"
    __table_args__ = (
        sa.UniqueConstraint("model_name", "challenger_version"),
        # One challenger at a time per model: the database refuses a second active rollout.
        sa.Index(
            "uq_rollouts_one_active",
            "model_name",
            unique=True,
            sqlite_where=sa.text("phase IN ('shadow', 'canary', 'awaiting_approval')"),
            postgresql_where=sa.text("phase IN ('shadow', 'canary', 'awaiting_approval')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(sa.String(128))
    champion_version: Mapped[int]  # 0: none
    challenger_version: Mapped[int]
    phase: Mapped[RolloutPhase] = mapped_column(string_enum(RolloutPhase, "rollout_phase"))
    plan_digest: Mapped[str] = mapped_column(sa.String(64))
    sequence: Mapped[int] = mapped_column(sa.BigInteger)
    published_sequence: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # an outbox
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    started_at: Mapped[datetime] = _created_at()
    phase_started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class Approval(Base):
    """A named person's sign-off of a challenger's promotion, with the reason they gave."""

    __tablename__ = "approvals"
    __table_args__ = (sa.UniqueConstraint("rollout_id", "approver"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(sa.ForeignKey("rollouts.id"), index=True)
    approver: Mapped[str] = mapped_column(sa.String(128))
    reason: Mapped[str] = mapped_column(sa.Text)
    approved_at: Mapped[datetime] = _created_at()


# Who writes each table (DESIGN.md: each service owns its rows). Another service reads a table
# only through its owner's read interface: the catalog's is `fetalmlops.common.db.catalog`.
# The registry's tables are the trainer's until the closed loop has a service of its own.
OWNERS: dict[str, str] = {
    IngestRecord.__tablename__: "ingest",
    Image.__tablename__: "anonymizer",
    ImageCopy.__tablename__: "anonymizer",
    Label.__tablename__: "anonymizer",
    DatasetSnapshot.__tablename__: "trainer",
    ModelVersion.__tablename__: "trainer",
    Deployment.__tablename__: "trainer",
    AuditEntry.__tablename__: "trainer",  # its schema; every service appends (db.audit.append)
    Report.__tablename__: "monitor",
    MonitoredVersion.__tablename__: "monitor",
    ObservedPrediction.__tablename__: "monitor",
    Feedback.__tablename__: "monitor",
    DriftWindow.__tablename__: "monitor",
    RetrainingRequest.__tablename__: "monitor",
    EnergyAccount.__tablename__: "monitor",
    Rollout.__tablename__: "monitor",
    Approval.__tablename__: "monitor",
}
