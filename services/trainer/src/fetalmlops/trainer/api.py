"""The trainer's HTTP door onto `fetal.training.requested`: `POST /v1/training-requests`.

For clients that cannot reach the bus: the in-process bus of `fetalmlops up`, a tool outside
the cluster. The body becomes the `TrainingRequested` a producer on Kafka would publish, with a
fresh request id and the reason ``api``, and the trainer's own consumer runs it like any other
(`main.Trainer.handle`). What the consumer would refuse from the body alone (an unknown
backbone, a hyper-parameter below its floor, a model the change-control plan does not govern)
is refused here, before anything is published, so a 202 is not a silent dead letter; what only
the catalog can tell (a snapshot that does not exist, a plan's data rules) the consumer finds,
and dead-letters with the reason.

The trainer keeps no table of requests, so there is no status route: the version a request made
is in the registry, named by its snapshot and configuration. A request the bus could not take
is a 503 with ``Retry-After``; sending it again is safe, as a run is named by its model,
snapshot and configuration, and one already registered is found instead of trained again.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from fetalmlops.common.bearer import Tokens
from fetalmlops.common.bearer_route import require
from fetalmlops.common.bus import Bus, BusUnavailable, Rejected, publish_event
from fetalmlops.common.settings import Settings
from fetalmlops.trainer.backbones import BACKBONES, Strategy
from fetalmlops.trainer.requests import FLOORS, STRATEGIES, config_of
from fetalmlops.trainer.settings import SERVICE_NAME, TrainerSettings
from fetalmlops.v1 import training_pb2

TRAINING_WRITE = "training:write"
REASON = "api"  # beside "cli", "schedule" and "drift": who asked, for the event's readers
RETRY_AFTER_S = 5
STRATEGY_NUMBERS = {
    strategy: number
    for number, strategy in STRATEGIES.items()
    if number != training_pb2.TRAINING_STRATEGY_UNSPECIFIED
}
Cohort = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
]
SEED_CEILING = 2**32 - 1  # numpy's generator, which every run seeds, takes 32 bits


class HyperparametersBody(BaseModel):
    """What a request may set; one left out takes the recipe's or the trainer's default."""

    model_config = ConfigDict(extra="forbid")

    # The floors are the consumer's own; the ceilings keep a slip of the keyboard from booking
    # the trainer for a month.
    epochs: int | None = Field(None, ge=FLOORS["epochs"], le=1000)
    batch_size: int | None = Field(None, ge=FLOORS["batch_size"], le=4096)
    learning_rate: float | None = Field(None, ge=FLOORS["learning_rate"], le=1.0)
    weight_decay: float | None = Field(None, ge=FLOORS["weight_decay"], le=1.0)
    patience: int | None = Field(
        None, ge=FLOORS["patience"], le=1000,
        description="Epochs without a better validation macro-F1 before stopping.",
    )  # fmt: skip
    seed: int | None = Field(None, ge=FLOORS["seed"], le=SEED_CEILING)
    input_size: int | None = Field(
        None, ge=FLOORS["input_size"], le=1024, description="Pixels a side; none: the backbone's."
    )


class TrainingRequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(
        None, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The registry name to train; none: the trainer's configured model.",
    )  # fmt: skip
    backbone: str | None = Field(
        None, description=f"One of {', '.join(BACKBONES)}; none: the trainer's default."
    )
    strategy: Strategy | None = Field(None, description="None: fine-tune.")
    hyperparameters: HyperparametersBody = Field(default_factory=HyperparametersBody)
    cohorts: list[Cohort] = Field(
        [], max_length=64, description="A fresh snapshot keeps only these (none: every one)."
    )
    held_out_cohorts: list[Cohort] = Field(
        [], max_length=64, description="Never trained on; scored as out-of-domain."
    )
    snapshot_id: str | None = Field(
        None, pattern=r"^ds-[0-9a-f]{16}$", description="None: snapshot the catalog first."
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str | None) -> str | None:
        if value is not None and value not in BACKBONES:
            raise PydanticCustomError(
                "unknown_backbone",
                "not a backbone: one of {names}",
                {"names": ", ".join(BACKBONES)},
            )
        return value

    def event(self, request_id: str) -> training_pb2.TrainingRequested:
        given = self.hyperparameters.model_dump(exclude_none=True)
        return training_pb2.TrainingRequested(
            request_id=request_id,
            model_name=self.model_name or "",
            snapshot_id=self.snapshot_id or "",
            backbone=self.backbone or "",
            reason=REASON,
            strategy=(
                training_pb2.TRAINING_STRATEGY_UNSPECIFIED
                if self.strategy is None
                else STRATEGY_NUMBERS[self.strategy]
            ),
            hyperparameters=training_pb2.Hyperparameters(**given),
            cohorts=self.cohorts,
            held_out_cohorts=self.held_out_cohorts,
        )


def add_routes(app: FastAPI, bus: Bus, settings: Settings, own: TrainerSettings) -> None:
    """Without tokens the route is open, and the service then listens on loopback only
    (`main.build`)."""
    tokens = Tokens(own.tokens)
    guarded = [Depends(require(TRAINING_WRITE, tokens))] if tokens else []

    @app.post(
        "/v1/training-requests",
        tags=["training"],
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=guarded,
        responses={
            503: {"description": "The message bus is unavailable: send it again (Retry-After)"}
        },
    )
    def request_training(body: TrainingRequestBody) -> dict[str, str]:
        """Ask for a new model version; published on fetal.training.requested."""
        event = body.event(uuid.uuid4().hex)
        try:
            config_of(event)  # what the consumer would refuse, refused now
        except Rejected as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        # The service's plan governs its own model (`governance.governs`), and no other.
        if own.plan is not None and event.model_name not in ("", own.model_name):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"the trainer works under the change-control plan of {own.model_name!r}: "
                "it trains no other model",
            )
        topic = settings.topics.training_requested
        try:
            publish_event(bus, topic, event.request_id, event, SERVICE_NAME)
        except BusUnavailable:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the message bus is unavailable: send the same request again later",
                {"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        return {"request_id": event.request_id, "status": "accepted"}
