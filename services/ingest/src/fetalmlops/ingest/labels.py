"""The labels API: attach a plane (and brain sub-plane) to an image, as a fetal.labels event.

Ingest does not keep labels: the event is the record, and the catalog joins it to the image
when the anonymizer has catalogued it. Label names are the canonical ones or any alias the
dataset readers know ("Fetal brain", "Trans-thalamic", ...).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from fetalmlops.common.bus import Bus, publish_event
from fetalmlops.common.planes import BrainPlane, Plane, brain_plane_to_proto, plane_to_proto
from fetalmlops.common.settings import Settings
from fetalmlops.datasets.labels import parse_brain_plane, parse_plane
from fetalmlops.v1 import labels_pb2

SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _plane(value: object) -> Plane:
    try:
        return parse_plane(str(value))
    except ValueError:  # its message quotes the name sent (refusals)
        raise PydanticCustomError(
            "unknown_plane", "not a plane: one of {names}, or a dataset's own name for one",
            {"names": ", ".join(Plane)},
        ) from None  # fmt: skip


def _brain_plane(value: object) -> BrainPlane | None:
    try:
        return None if value is None else parse_brain_plane(str(value))
    except ValueError:
        raise PydanticCustomError(
            "unknown_brain_plane",
            "not a brain sub-plane: one of {names}, or a dataset's own name for one",
            {"names": ", ".join(BrainPlane)},
        ) from None


# What every route that takes a plane accepts: the canonical name or a dataset's alias.
PlaneName = Annotated[Plane, BeforeValidator(_plane)]
BrainPlaneName = Annotated[BrainPlane | None, BeforeValidator(_brain_plane)]


class LabelRequest(BaseModel):
    raw_sha256: str | None = Field(None, description="The sha256 ingest returned for the image.")
    image_id: str | None = Field(None, description="The catalog id of an anonymised image.")
    plane: PlaneName
    brain_plane: BrainPlaneName = None
    annotator: str = Field(
        ..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
        description="A pseudonymous annotator id (never a clinician's name).",
    )  # fmt: skip

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
