"""One image per source instance: the pure rules (which image a copy is; what its event says)."""

from __future__ import annotations

from datetime import UTC, datetime

from fetalmlops.anonymizer.instances import (
    Catalogued,
    Facts,
    Instance,
    announcement,
    event_id,
    same_image,
)
from fetalmlops.common.store import ObjectInfo

FIRST = Catalogued("img-first", Instance("2.25.111", "a" * 64))
PICTURE = Catalogued("img-picture", Instance(None, "b" * 64))


def test_the_same_instance_is_the_same_image_whatever_its_bytes() -> None:
    assert same_image(Instance("2.25.111", "c" * 64), [PICTURE, FIRST]) == "img-first"


def test_the_same_de_identified_bytes_are_the_same_image() -> None:
    """A picture re-sent with other metadata chunks: nothing but its bytes to go by."""
    assert same_image(Instance(None, "b" * 64), [FIRST, PICTURE]) == "img-picture"
    assert same_image(Instance("2.25.999", "a" * 64), [FIRST]) == "img-first"


def test_another_instance_is_a_new_image() -> None:
    assert same_image(Instance("2.25.222", "d" * 64), [FIRST, PICTURE]) is None
    assert same_image(Instance(None, "d" * 64), [FIRST, PICTURE]) is None
    assert same_image(Instance("2.25.111", "a" * 64), []) is None


def test_the_instance_uid_wins_over_bytes_that_match_another_image() -> None:
    other = Catalogued("img-other", Instance("2.25.333", "e" * 64))
    assert same_image(Instance("2.25.111", "e" * 64), [other, FIRST]) == "img-first"


def test_an_announcement_is_the_same_event_however_often_it_is_made() -> None:
    catalogued_at = datetime(2026, 3, 1, tzinfo=UTC)
    facts = Facts("img-1", "FM1", "Acme", "Echo 5", 600, 800, 0.2, "a", catalogued_at)
    dicom = ObjectInfo("fetal-anonymized", "images/img-1.dcm", 10, "e", "application/dicom",
                       sha256="f" * 64)  # fmt: skip
    png = ObjectInfo("fetal-anonymized", "canonical/img-1.png", 5, "e", "image/png")
    first, again = announcement(facts, dicom, png), announcement(facts, dicom, png)

    assert first.SerializeToString() == again.SerializeToString()
    assert first.meta.event_id == event_id("img-1") != event_id("img-2")
    assert first.meta.occurred_at.ToDatetime(UTC) == facts.catalogued_at
    assert (first.dicom.key, first.canonical.key, first.geometry.rows) == (dicom.key, png.key, 600)
