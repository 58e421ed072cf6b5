"""The labels API: attach a plane (and brain sub-plane) to an image, as a fetal.labels event.

Ingest does not keep labels: the event is the record, and the catalog joins it to the image
when the anonymizer has catalogued it. Label names are the canonical ones or any alias the
dataset readers know ("Fetal brain", "Trans-thalamic", ...).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.common.planes import BrainPlane, Plane, brain_plane_to_proto, plane_to_proto
from fetalmlops.common.settings import Settings
from fetalmlops.datasets.labels import parse_brain_plane, parse_plane
from fetalmlops.v1 import labels_pb2

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class LabelRequest(BaseModel):
    raw_sha256: str | None = Field(None, description="The sha256 ingest returned for the image.")
    image_id: str | None = Field(None, description="The catalog id of an anonymised image.")
    plane: Plane
    brain_plane: BrainPlane | None = None
    annotator: str = Field(
        ..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
        description="A pseudonymous annotator id (never a clinician's name).",
    )  # fmt: skip

    @field_validator("plane", mode="before")
    @classmethod
    def _plane(cls, value: object) -> Plane:
        return parse_plane(str(value))

    @field_validator("brain_plane", mode="before")
    @classmethod
    def _brain_plane(cls, value: object) -> BrainPlane | None:
        return None if value is None else parse_brain_plane(str(value))

    @field_validator("raw_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.match(value):
            raise ValueError("raw_sha256 must be 64 lowercase hex digits")
        return value

    def image_reference(self) -> str:
        references = [r for r in (self.raw_sha256, self.image_id) if r]
        if len(references) != 1:
            raise ValueError("give exactly one of raw_sha256 and image_id")
        return references[0]


def publish_label(bus: Bus, settings: Settings, request: LabelRequest) -> str:
    """Publish the label; returns its event id."""
    reference = request.image_reference()
    event = labels_pb2.LabelAttached(
        plane=plane_to_proto(request.plane), annotator=request.annotator
    )
    if request.brain_plane is not None and request.plane is Plane.FETAL_BRAIN:
        event.brain_plane = brain_plane_to_proto(request.brain_plane)
    if request.raw_sha256:
        event.raw_sha256 = request.raw_sha256
    else:
        event.image_id = reference
    publish_event(bus, settings.topics.labels, reference, event, "ingest")
    return str(event.meta.event_id)
