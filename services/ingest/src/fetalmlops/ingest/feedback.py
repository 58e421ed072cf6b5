"""The feedback API: a clinician's true plane for a served prediction, as a fetal.feedback event.

Ingest does not keep feedback: the event is the record, and the monitor joins it to the
prediction it names (whichever arrives first) to measure each model version's performance.
The prediction id is the one the inference service answered with: its own request id (32 hex
digits, never a client's, which may be an accession number) and the image's index in the
request. A shadow arm's predictions are never answered, so feedback cannot name one.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.common.planes import Plane, brain_plane_to_proto, plane_to_proto
from fetalmlops.common.settings import Settings
from fetalmlops.ingest.labels import BrainPlaneName, PlaneName
from fetalmlops.v1 import feedback_pb2

PREDICTION_ID = r"^[0-9a-f]{32}-[0-9]{1,6}$"


class FeedbackRequest(BaseModel):
    prediction_id: str = Field(
        ..., pattern=PREDICTION_ID,
        description="A `prediction_id` the inference service answered with (`<request>-<index>`).",
    )  # fmt: skip
    true_plane: PlaneName
    true_brain_plane: BrainPlaneName = Field(
        None, description="The brain sub-plane, for a `fetal_brain` true plane only."
    )
    reviewer: str = Field(
        ..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
        description="A pseudonymous reviewer id (never a clinician's name).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _brain_plane_of_a_brain(self) -> FeedbackRequest:
        # A sub-plane on another plane contradicts it: which of the two did the clinician mean?
        if self.true_brain_plane is not None and self.true_plane is not Plane.FETAL_BRAIN:
            raise PydanticCustomError(
                "brain_plane_without_brain", "true_brain_plane is for a fetal_brain true plane"
            )
        return self


def publish_feedback(bus: Bus, settings: Settings, request: FeedbackRequest) -> str:
    """Publish the feedback, keyed by the prediction it corrects; returns its event id."""
    event = feedback_pb2.FeedbackGiven(
        prediction_id=request.prediction_id,
        true_plane=plane_to_proto(request.true_plane),
        reviewer=request.reviewer,
    )
    if request.true_brain_plane is not None:
        event.true_brain_plane = brain_plane_to_proto(request.true_brain_plane)
    publish_event(bus, settings.topics.feedback, request.prediction_id, event, "ingest")
    return str(event.meta.event_id)
