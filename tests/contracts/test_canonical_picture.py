"""One DICOM, three paths, one picture: what the anonymizer publishes for a study, what the
inference service makes of the same file sent as a request, and what the trainer reads from it
on disk (`fetalmlops train --dataset`) are the same bytes, so no model is trained on one
picture and served another.

The studies are the phantom's, with a banner burned in beside the sector, from every scanner
profile, and real-world ultrasound files (palette colour, big endian, RGB, a cine).
"""

from __future__ import annotations

import io
from pathlib import Path

import data_store  # the pydicom-data package
import deid_data
import pytest

from fetalmlops.anonymizer.images import DICOM, Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import create_engine_for
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import draw, plan
from fetalmlops.datasets.phantom.dicom import to_dataset, uids
from fetalmlops.datasets.phantom.profiles import PROFILES
from fetalmlops.inference.dicom import request_picture
from fetalmlops.trainer.local import dicom_picture

PYDICOM_DATA = Path(data_store.__file__).parent / "data"
DEID_US = Path(deid_data.__file__).parent / "data" / "ultrasounds"
REAL_WORLD = [
    PYDICOM_DATA / "gdcm-US-ALOKA-16.dcm",
    PYDICOM_DATA / "gdcm-US-ALOKA-16_big.dcm",
    DEID_US / "GREYSCALE_IMAGE.dcm",
    DEID_US / "RGB_IMAGE.dcm",
    DEID_US / "ultrasound-multiframe.dcm",
]


def phantom_study(seed: int, profile: str) -> bytes:
    spec = plan(1, seed, (profile,))[0]
    frame = draw(spec, seed, 0.5, banner=True)
    study = uids(seed, spec.patient, spec.visit_index, 1, spec.image_id)
    ds, _ = to_dataset(frame, spec.profile, spec.patient, spec.visit, study, spec.instance_number)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def anonymizer(tmp_path_factory: pytest.TempPathFactory) -> Anonymizer:
    """The anonymizer service's consumer; only its ``deidentify`` runs here."""
    root = tmp_path_factory.mktemp("anonymizer")
    url = f"sqlite:///{root}/catalog.db"
    settings = Settings(store_dir=root / "objects", database_url=url)
    return Anonymizer(
        settings,
        AnonymizerSettings(secret="three-paths"),
        LocalStore(settings.store_dir),
        EmbeddedBus(1),
        create_engine_for(url),
    )


STUDIES = [
    *[pytest.param(lambda p=p: phantom_study(11, p), id=f"phantom-{p}") for p in PROFILES],
    *[pytest.param(path.read_bytes, id=path.name) for path in REAL_WORLD],
]


@pytest.mark.parametrize("study", STUDIES)
def test_the_anonymizer_inference_and_the_trainer_see_the_same_picture(
    anonymizer: Anonymizer, study: object
) -> None:
    assert callable(study)
    data: bytes = study()

    published = anonymizer.deidentify(data, DICOM).canonical_png
    served = request_picture(data)
    trained = dicom_picture(data)

    assert served == published
    assert trained == published
