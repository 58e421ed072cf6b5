"""The catalog a snapshot reads: labels join images through the raw copies they name."""

from __future__ import annotations

from pathlib import Path

from fetalmlops.common.db import (
    Image,
    ImageCopy,
    Label,
    Plane,
    create_engine_for,
    session_scope,
    upgrade,
)
from fetalmlops.common.settings import Settings
from fetalmlops.trainer.catalog import labelled_entries


def test_labels_naming_any_copy_of_an_image_label_the_one_image(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.db"
    upgrade(url)
    engine = create_engine_for(url)
    with session_scope(engine) as session:
        session.add(Image(id="img-a", sha256="a" * 64, object_key="images/img-a.dcm",
                          canonical_key="canonical/img-a.png", rows=2, columns=2))  # fmt: skip
        session.add_all(
            [
                ImageCopy(copy_id="img-a", image_id="img-a"),  # the copy it was made from
                ImageCopy(copy_id="img-a2", image_id="img-a"),  # the same instance, re-sent
            ]
        )
        session.add_all(
            [
                Label(image_id="img-a", plane=Plane.FETAL_BRAIN, annotator="one"),
                # Sent for the second copy before it was known to be one: the same image.
                Label(image_id="img-a2", plane=Plane.FETAL_FEMUR, annotator="two"),
                Label(image_id="img-a2", plane=Plane.FETAL_FEMUR, annotator="three"),
                # An annotator who labelled both copies counts once, by the later reading.
                Label(image_id="img-a", plane=Plane.FETAL_BRAIN, annotator="four"),
                Label(image_id="img-a2", plane=Plane.FETAL_FEMUR, annotator="four"),
                # A label whose image is not catalogued yet is no entry.
                Label(image_id="img-later", plane=Plane.OTHER, annotator="one"),
            ]
        )

    (entry,) = labelled_entries(engine, Settings(database_url=url))
    engine.dispose()

    assert entry.image_id == "img-a"
    assert entry.plane == Plane.FETAL_FEMUR.value  # femur 3 (two, three, four) : brain 1 (one)
    assert entry.source == "fetal-anonymized/canonical/img-a.png"
