"""One picture, two thumbnails, the same statistics: the trainer measures its drift reference on
its thumbnail of each validation image, the inference service measures live traffic on its
thumbnail of each request. A difference of arithmetic between the two would read as drift.

The inference side reads a real archive, built with `fetalmlops.archive` as the trainer builds
it, through the thumbnail code unpacked from that archive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fetalmlops.archive.packaging import ModelLayout, build_mar, export_torchscript
from fetalmlops.archive.preprocessing import Preprocessing
from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.samples import plane_pictures
from fetalmlops.imaging.statistics import per_image_statistics
from fetalmlops.inference.archive import open_version
from fetalmlops.inference.events import Observation, Served, prediction_event
from fetalmlops.trainer.job import thumbnail

CLASSES = [plane.value for plane in Plane]
NAME, VERSION, SIZE = "fetal-planes", 1, 64


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> ModelLayout:
    root = tmp_path_factory.mktemp("version")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, len(CLASSES)),
    ).eval()  # fmt: skip
    example = torch.randn(1, 3, SIZE, SIZE)
    torchscript = export_torchscript(model, example, root / "model_ts.pt", head="4", features="1")
    return build_mar(NAME, VERSION, torchscript, Preprocessing(size=SIZE), CLASSES, root / "v1")


def test_live_image_statistics_are_the_drift_references_own(
    layout: ModelLayout, tmp_path: Path
) -> None:
    archive = open_version(layout.root, tmp_path)
    served = Served("r", NAME, VERSION, CLASSES, "cpu", 1.0)
    for png in plane_pictures(4):
        decoded = archive.decode(png)
        np.testing.assert_array_equal(decoded.thumbnail, thumbnail(png))
        observation = Observation([1 / len(CLASSES)] * len(CLASSES), None, decoded.thumbnail, 1, 1)
        statistics = prediction_event(served, 0, observation).image_statistics
        expected = per_image_statistics(thumbnail(png)[None])
        assert statistics.mean == pytest.approx(expected["mean"][0], abs=1e-6)
        assert statistics.std == pytest.approx(expected["std"][0], abs=1e-6)
        assert statistics.dark_fraction == pytest.approx(expected["dark_fraction"][0], abs=1e-6)
        assert 0 <= statistics.p05 <= statistics.mean <= statistics.p95 <= 1
