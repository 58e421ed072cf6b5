"""The kernel's database layer: models, engines and sessions, and the migrations that build them.

SQLite is the embedded default and PostgreSQL the real one; the models use only types that
behave the same on both, and ``upgrade(url)`` builds either from the same migration scripts.
"""

from fetalmlops.common.db.migrate import (
    compare_to_models,
    current,
    downgrade,
    head,
    revision,
    upgrade,
)
from fetalmlops.common.db.models import (
    Approval,
    AuditEntry,
    Base,
    DatasetSnapshot,
    Deployment,
    DriftWindow,
    EnergyAccount,
    Feedback,
    Image,
    ImageCopy,
    IngestChannel,
    IngestRecord,
    Label,
    ModelStage,
    ModelVersion,
    MonitoredVersion,
    ObservedPrediction,
    Report,
    ReportKind,
    RetrainingRequest,
    Rollout,
    RolloutPhase,
)
from fetalmlops.common.db.session import create_engine_for, session_scope
from fetalmlops.common.planes import BrainPlane, Plane

__all__ = [
    "Approval",
    "AuditEntry",
    "Base",
    "BrainPlane",
    "DatasetSnapshot",
    "Deployment",
    "DriftWindow",
    "EnergyAccount",
    "Feedback",
    "Image",
    "ImageCopy",
    "IngestChannel",
    "IngestRecord",
    "Label",
    "ModelStage",
    "ModelVersion",
    "MonitoredVersion",
    "ObservedPrediction",
    "Plane",
    "Report",
    "ReportKind",
    "RetrainingRequest",
    "Rollout",
    "RolloutPhase",
    "compare_to_models",
    "create_engine_for",
    "current",
    "downgrade",
    "head",
    "revision",
    "session_scope",
    "upgrade",
]
