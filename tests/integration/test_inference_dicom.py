"""A scanner's DICOM sent to the real inference process: served as its canonical PNG, PHI kept out.

`fetalmlops serve` runs once for the module, at DEBUG, with the trainer's `.mar` of a tiny CNN.
The study is the phantom's: patient name, ID and birth date in the header, a banner with the
name, ID, date and institution burned into the pixels. The anonymizer (in this process) says
which canonical PNG it would publish for it; a V1 or V2 request carrying the DICOM itself must
be answered exactly as that PNG is, and no planted value may reach the answers or the server's
log.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

from fetalmlops.anonymizer.images import DICOM, Anonymizer
from fetalmlops.anonymizer.settings import AnonymizerSettings
from fetalmlops.common.bus import EmbeddedBus
from fetalmlops.common.db import create_engine_for
from fetalmlops.common.settings import Settings
from fetalmlops.common.store import LocalStore
from fetalmlops.datasets.phantom.dataset import OutputFormat, generate, plan
from fetalmlops.datasets.phantom.phi import planted_phi, sidecar

from .model_versions import CLASSES, Version, build_version
from .processes import Serving, serving, wait_for

NAME, NUMBER = "fetal-planes", 3
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


@dataclass(frozen=True)
class Study:
    dicom: bytes
    canonical_png: bytes  # what the anonymizer publishes for it
    regionless: bytes  # the same file without its SequenceOfUltrasoundRegions
    phi: list[str]  # every value planted in its header and every banner line


def encoded(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A phantom study as the scanner wrote it, and what the anonymizer publishes for it."""
    root = tmp_path_factory.mktemp("dicom-study")
    generate(root / "phantom", plan(1, seed=21)[:1], seed=21, fmt=OutputFormat.DICOM)
    (path,) = sorted((root / "phantom" / "dicom").glob("*.dcm"))
    data = path.read_bytes()
    settings = Settings(store_dir=root / "objects", database_url=f"sqlite:///{root}/catalog.db")
    anonymizer = Anonymizer(
        settings,
        AnonymizerSettings(secret="inference-dicom"),
        LocalStore(settings.store_dir),
        EmbeddedBus(1),
        create_engine_for(settings.database_url),
    )
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.SequenceOfUltrasoundRegions
    return Study(
        dicom=data,
        canonical_png=anonymizer.deidentify(data, DICOM).canonical_png,
        regionless=encoded(ds),
        phi=sorted(planted_phi([sidecar(path)])),
    )


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> Version:
    return build_version(tmp_path_factory.mktemp("dicom-version"), NAME, NUMBER, seed=4)


@pytest.fixture(scope="module")
def server(version: Version, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(version.layout.root, log, {"FETALMLOPS_LOG_LEVEL": "DEBUG"}) as running:
        yield running


@pytest.fixture
def client(server: Serving) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v2_images(images: list[bytes]) -> dict[str, Any]:
    data = [b64(image) for image in images]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}]}


def rows(probabilities: dict[str, float]) -> list[float]:
    assert list(probabilities) == CLASSES
    return list(probabilities.values())


def test_a_v1_dicom_is_answered_as_its_canonical_png(
    client: httpx.Client, study: Study, version: Version
) -> None:
    body = {"instances": [{"b64": b64(study.dicom)}, {"b64": b64(study.canonical_png)}]}

    response = client.post(V1, json=body)

    assert response.status_code == 200, response.text
    from_dicom, from_png = response.json()["predictions"]
    np.testing.assert_allclose(rows(from_dicom["probabilities"]), rows(from_png["probabilities"]))
    np.testing.assert_allclose(
        rows(from_dicom["probabilities"]), version.expected(study.canonical_png), atol=1e-5
    )
    assert from_dicom["label"] == from_png["label"]


def test_a_v2_dicom_is_answered_as_its_canonical_png(
    client: httpx.Client, study: Study, version: Version
) -> None:
    response = client.post(V2, json=v2_images([study.dicom, study.canonical_png]))

    assert response.status_code == 200, response.text
    probabilities, labels = response.json()["outputs"]
    from_dicom, from_png = np.array(probabilities["data"]).reshape(2, len(CLASSES))
    np.testing.assert_allclose(from_dicom, from_png)
    np.testing.assert_allclose(from_dicom, version.expected(study.canonical_png), atol=1e-5)
    assert labels["data"][0] == labels["data"][1]


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_dicom_without_regions_is_refused_with_400(
    client: httpx.Client, study: Study, protocol: str
) -> None:
    if protocol == "v1":
        response = client.post(V1, json={"instances": [{"b64": b64(study.regionless)}]})
    else:
        response = client.post(V2, json=v2_images([study.regionless]))

    assert response.status_code == 400, response.text
    assert "cannot be cleaned: send the anonymizer's cleaned PNG instead" in response.text


def test_no_planted_value_reaches_an_answer_or_the_debug_log(
    client: httpx.Client, study: Study, server: Serving
) -> None:
    truncated = study.dicom[: len(study.dicom) // 2]
    exchanges = [
        client.post(V1, json={"instances": [{"b64": b64(study.dicom)}]}),
        client.post(V2, json=v2_images([study.dicom])),
        client.post(V1, json={"instances": [{"b64": b64(study.regionless)}]}),
        client.post(V2, json=v2_images([truncated])),
    ]
    assert [r.status_code for r in exchanges] == [200, 200, 400, 400]
    # Each exchange is logged before its answer is sent; a probe after them all is logged last
    # (the access log names the route, never the URL).
    route = '"route": "/v2/models/{model_name}/ready"'
    before = server.log.read_text(errors="replace").count(route)
    client.get(f"/v2/models/{NAME}/ready")
    wait_for(
        lambda: server.log.read_text(errors="replace").count(route) > before, 10, "the probe logged"
    )

    log = server.log.read_bytes().decode("utf-8", errors="replace")
    assert "DEBUG" in log, "the server logs at DEBUG"
    channels = {"log": log, **{f"answer {i}": r.text for i, r in enumerate(exchanges)}}
    leaks = {name: [v for v in study.phi if v in text] for name, text in channels.items()}
    assert leaks == {name: [] for name in channels}
