"""Which promotions a replica follows, and what following one does to the served version."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalmlops.archive.packaging import ModelLayout
from fetalmlops.common.bus import Rejected
from fetalmlops.common.bus.base import Record
from fetalmlops.common.events import SCHEMA_HEADER, schema_name
from fetalmlops.inference.archive import Archive, ArchiveError, open_version
from fetalmlops.inference.predictor import PlanePredictor
from fetalmlops.inference.reload import Follower, follows
from fetalmlops.v1 import models_pb2, training_pb2

from .conftest import NAME, VERSION


def promoted(version: int, previous: int, name: str = NAME) -> models_pb2.ModelPromoted:
    return models_pb2.ModelPromoted(
        model_name=name,
        version=version,
        previous_version=previous,
        storage_uri=f"s3://m/v{version}/",
    )


@pytest.fixture(scope="module")
def archive(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return open_version(layout.root, tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize(
    ("version", "previous", "name", "followed"),
    [
        (VERSION + 1, VERSION, NAME, True),  # the next version
        (VERSION + 3, 1, NAME, True),  # newer, whatever it replaced
        (VERSION - 1, VERSION, NAME, True),  # a rollback from the served version
        (VERSION - 1, VERSION - 2, NAME, False),  # history, replayed from the topic's start
        (VERSION, VERSION - 1, NAME, False),  # the served version itself
        (VERSION + 1, VERSION, "another-model", False),
    ],
)
def test_which_promotions_are_followed(
    archive: Archive, version: int, previous: int, name: str, followed: bool
) -> None:
    assert follows(promoted(version, previous, name), archive) is followed


def record(event: object) -> Record:
    value = event.SerializeToString()  # type: ignore[attr-defined]
    return Record(
        "fetal.models.promoted", 0, 0, NAME, value, ((SCHEMA_HEADER, schema_name(event).encode()),)
    )  # type: ignore[arg-type]


def test_a_followed_promotion_switches_and_a_broken_one_keeps_the_old_version(
    layout: ModelLayout, archive: Archive, tmp_path: Path
) -> None:
    predictor = PlanePredictor(archive)
    predictor.load()
    opened: list[str] = []

    def open_uri(uri: str) -> Archive:
        opened.append(uri)
        if uri.endswith("/v9/"):
            raise ArchiveError(f"no model version at {uri}")
        return open_version(layout.root, tmp_path / str(len(opened)))

    follower = Follower(predictor, open_uri)
    follower.handle(record(promoted(VERSION - 2, VERSION - 3)))  # history: not even opened
    assert opened == []
    with pytest.raises(ArchiveError, match="no model version"):
        follower.handle(record(promoted(9, VERSION)))
    assert predictor.serving().champion.archive is archive  # still serving
    follower.handle(record(promoted(VERSION + 1, VERSION)))
    assert opened == ["s3://m/v9/", f"s3://m/v{VERSION + 1}/"]
    assert predictor.serving().champion.archive is not archive
    with pytest.raises(Rejected, match="expected ModelPromoted"):
        follower.handle(record(training_pb2.TrainingRequested(model_name=NAME)))


def test_a_replica_awaiting_its_first_version_serves_the_first_promotion_of_its_name(
    layout: ModelLayout, tmp_path: Path
) -> None:
    predictor = PlanePredictor(None, NAME)
    opened: list[str] = []

    def open_uri(uri: str) -> Archive:
        opened.append(uri)
        if uri.endswith("/v9/"):
            raise ArchiveError(f"no model version at {uri}")
        return open_version(layout.root, tmp_path / str(len(opened)))

    follower = Follower(predictor, open_uri)
    follower.handle(record(promoted(VERSION, 0, "another-model")))
    assert opened == [] and predictor.awaiting_first_version
    with pytest.raises(ArchiveError, match="no model version"):  # retried, then dead-lettered
        follower.handle(record(promoted(9, 0)))
    assert (predictor.awaiting_first_version, predictor.ready) == (True, False)  # still waiting
    follower.handle(record(promoted(VERSION, VERSION - 3)))  # the first, whatever it replaced
    assert (predictor.ready, predictor.model_version) == (True, str(VERSION))
    follower.handle(record(promoted(VERSION - 1, VERSION - 2)))  # history from then on
    assert opened == ["s3://m/v9/", f"s3://m/v{VERSION}/"]
