"""Grad-CAM and SHAP explanations: right where the model looks, in bounded time, as a PNG.

The property checks use a tiny CNN built so that its class 0 sees only the left half of the
image and its class 1 only the right half: an explanation of class 0 that puts its weight
anywhere but the left half is wrong, whatever the image.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from numpy.typing import NDArray
from PIL import Image
from torch import nn

from fetalmlops.archive.packaging import ModelLayout, build_mar
from fetalmlops.archive.preprocessing import Preprocessing
from fetalmlops.inference.archive import Archive, open_version
from fetalmlops.inference.explain import (
    FIRST_SAMPLES,
    MAX_IMAGES,
    fallback_background,
    grad_cam,
    shap_attributions,
)
from fetalmlops.inference.heatmap import heatmap_png
from fetalmlops.inference.predictor import Options, PlanePredictor

from .conftest import CLASSES, NAME, SIZE, VERSION

SIDE = 32
CHANNELS = 8  # half of them kept on the left of the feature map, half on the right
ANSWER_KEYS = {
    "label", "probabilities", "target", "method", "heatmap", "heatmap_png", "elapsed_ms",
    "model_name", "model_version", "arm",
}  # fmt: skip


class HalvesNet(nn.Module):
    """Class 0 depends only on the left half of the image, class 1 only on the right half.

    Random filters, max-pooled (so Grad-CAM's map is coarser than the image); a fixed mask
    keeps the first half of the channels on the left of the feature map and the other half on
    the right. Class 0 sums the left channels, class 1 the right ones, any further class a
    positive mix of all.
    """

    def __init__(self, side: int = SIDE, classes: int = 3, seed: int = 5) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.head = nn.Linear(CHANNELS, classes, bias=False)
        half = CHANNELS // 2
        weights = torch.rand(classes, CHANNELS, generator=generator)
        weights[0, half:], weights[1, :half] = 0.0, 0.0
        mask = torch.zeros(1, CHANNELS, side // 2, side // 2)
        mask[:, :half, :, : side // 4] = 1.0
        mask[:, half:, :, side // 4 :] = 1.0
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.zero_()
            self.head.weight.copy_(weights)
        self.eval()

    def forward_with_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2) * self.mask
        embedding = features.mean(dim=(2, 3))
        return self.head(embedding), embedding, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


def speckle(count: int, side: int = SIDE) -> tuple[torch.Tensor, int]:
    """Greyscale noise over the whole frame (both halves carry signal), and its seed."""
    seed = secrets.randbelow(2**31)
    grey = torch.randn(count, 1, side, side, generator=torch.Generator().manual_seed(seed))
    return grey.expand(-1, 3, -1, -1).contiguous(), seed


def left_share(maps: NDArray[Any]) -> NDArray[np.float64]:
    """The share of each map's absolute mass in the left half of the image."""
    magnitude = np.abs(maps.astype(np.float64))
    return magnitude[..., : maps.shape[-1] // 2].sum(axis=(1, 2)) / magnitude.sum(axis=(1, 2))


def traced(model: HalvesNet, *, with_features: bool) -> torch.jit.ScriptModule:
    example = torch.randn(1, 3, model.mask.shape[-1] * 2, model.mask.shape[-1] * 2)
    methods = {"forward": example}
    if with_features:
        methods["forward_with_features"] = example
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
        return torch.jit.trace_module(model, methods)  # type: ignore[no-untyped-call,no-any-return]


@pytest.fixture(scope="module")
def shap_imported() -> None:
    """shap's first import takes seconds; a budget test measures sampling, not importing."""
    importlib.import_module("shap")


def test_grad_cam_finds_the_half_each_class_looks_at() -> None:
    images, seed = speckle(2)
    maps = grad_cam(HalvesNet().forward_with_features, images, targets=[0, 1])

    assert maps.shape == (2, SIDE, SIDE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max(axis=(1, 2)) == pytest.approx([1.0, 1.0])
    # Bilinear upsampling blurs one feature-map cell across the midline, no more.
    assert left_share(maps[:1])[0] > 0.95, seed
    assert left_share(maps[1:])[0] < 0.05, seed


def test_grad_cam_defaults_to_the_predicted_class_and_runs_under_inference_mode() -> None:
    model = HalvesNet()
    with torch.inference_mode():
        images, _seed = speckle(4)
        predicted = model(images).argmax(dim=1).tolist()
        by_default = grad_cam(model.forward_with_features, images)

    other = [(target + 1) % 3 for target in predicted]
    assert np.array_equal(by_default, grad_cam(model.forward_with_features, images, predicted))
    assert not np.array_equal(by_default, grad_cam(model.forward_with_features, images, other))


def test_grad_cam_of_the_torchscript_export_is_the_eager_models_call_after_call() -> None:
    model = HalvesNet()
    images, seed = speckle(2)
    buffer = io.BytesIO()
    torch.jit.save(traced(model, with_features=True), buffer)
    buffer.seek(0)
    script = torch.jit.load(buffer).eval()
    eager = grad_cam(model.forward_with_features, images, [0, 1])

    # TorchScript optimises a method after its first calls: Grad-CAM must survive that, with
    # predictions (in inference mode) running the same method in between.
    for _ in range(4):
        with torch.inference_mode():
            script.forward_with_features(images)
        exported = grad_cam(script.forward_with_features, images, [0, 1])
        np.testing.assert_allclose(exported, eager, atol=1e-5, err_msg=f"seed {seed}")


@pytest.mark.usefixtures("shap_imported")
@pytest.mark.parametrize("with_background", [False, True])
def test_shap_attributes_each_class_to_the_half_it_sees(with_background: bool) -> None:
    model = HalvesNet()
    images, seed = speckle(2)
    background = speckle(4)[0] if with_background else None

    values, samples = shap_attributions(
        model, images, background, [0, 1], budget_s=10.0, max_samples=48
    )

    assert values.shape == (2, SIDE, SIDE) and samples == 48
    # The right half's pixels have no path to class 0 (and the left's none to class 1) but
    # through the 3 x 3 filters straddling the midline.
    assert left_share(values[:1])[0] > 0.95, seed
    assert left_share(values[1:])[0] < 0.05, seed


@pytest.mark.usefixtures("shap_imported")
def test_shap_samples_what_the_budget_allows_and_no_more() -> None:
    model = HalvesNet(side=64)
    images, _ = speckle(1, side=64)

    start = time.monotonic()
    _values, samples = shap_attributions(model, images, None, None, 2.0, max_samples=10**6)
    elapsed = time.monotonic() - start
    _values, rushed = shap_attributions(model, images, None, None, 1e-3, max_samples=10**6)

    assert elapsed < 3.0
    assert FIRST_SAMPLES < samples < 10**6  # the budget, not the cap, stopped it
    assert rushed == FIRST_SAMPLES  # one timed round runs, however small the budget


def test_fallback_background_is_black_and_a_blurred_copy() -> None:
    image = speckle(1, side=64)[0][0]

    dark, blurred = fallback_background(image, black=-0.9)

    assert torch.all(dark == -0.9)
    assert blurred.mean().item() == pytest.approx(image.mean().item(), abs=0.05)
    # Neighbouring pixels of noise differ by about its spread; of the blurred copy, hardly.
    assert blurred.diff(dim=-1).abs().mean() < 0.1 * image.diff(dim=-1).abs().mean()


def decoded(png: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.mode == "RGB"
        return np.asarray(picture)


def test_heatmap_png_colours_evidence_over_the_scan() -> None:
    heat = np.zeros((24, 40))
    heat[:, 20:] = 1.0
    picture = np.full((24, 40), 0.5)

    pixels = decoded(heatmap_png(heat, picture)).astype(int)

    assert pixels.shape == (24, 40, 3)
    assert np.all(pixels[:, :20] == 128)  # no evidence: the grey scan shows through
    hot = pixels[0, 39]
    assert hot[0] > 200 and hot[0] > hot[2]  # inferno's bright yellow end, blended
    with pytest.raises(ValueError, match="differ in size"):
        heatmap_png(heat, picture.T)


def test_signed_heatmap_png_diverges_around_white() -> None:
    attributions = np.array([[-2.0, 0.0, 1.0, 2.0]])

    against, neutral, weak, strong = decoded(heatmap_png(attributions, signed=True))[0]

    assert against[2] > against[0]  # blue: against the class
    assert strong[0] > strong[2]  # red: for it
    assert min(neutral) > 240  # zero is white
    assert weak.sum() > strong.sum()  # half the largest attribution: a paler red


def served(root: Path, cache: Path, budget_s: float = 5.0) -> PlanePredictor:
    predictor = PlanePredictor(
        open_version(root, cache), options=Options(explain_timeout_s=budget_s)
    )
    predictor.load()
    return predictor


def archived(model: HalvesNet, root: Path, *, with_features: bool) -> Path:
    script = root / "model_ts.pt"
    root.mkdir(parents=True, exist_ok=True)
    traced(model, with_features=with_features).save(str(script))
    build_mar(NAME, VERSION, script, Preprocessing(size=SIZE), CLASSES, root / "version")
    return root / "version"


@pytest.fixture(scope="module")
def featured(tmp_path_factory: pytest.TempPathFactory) -> PlanePredictor:
    """A version whose TorchScript exports ``forward_with_features``, as Grad-CAM needs."""
    root = tmp_path_factory.mktemp("featured")
    model = HalvesNet(side=SIZE, classes=len(CLASSES))
    return served(archived(model, root, with_features=True), root / "cache")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> PlanePredictor:
    """A version exported before ``forward_with_features`` existed."""
    root = tmp_path_factory.mktemp("plain")
    model = HalvesNet(side=SIZE, classes=len(CLASSES))
    return served(archived(model, root, with_features=False), root / "cache")


def body(pngs: list[bytes], **parameters: object) -> dict[str, Any]:
    instances = [{"b64": base64.b64encode(png).decode()} for png in pngs]
    return (
        {"instances": instances, "parameters": parameters}
        if parameters
        else {"instances": instances}
    )


def explain(predictor: PlanePredictor, request: object) -> list[dict[str, Any]]:
    """``POST :explain`` as KServe runs it: preprocess, explain, postprocess."""
    response, _headers = asyncio.run(predictor(request, verb=InferenceVerb.EXPLAIN))
    explanations: list[dict[str, Any]] = response["explanations"]
    return explanations


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({"method": "lime"}, r"^unknown method: one of \['gradcam', 'shap'\]$"),
        ({"method": ["shap"]}, "unknown method"),
        ({"target": "fetal_heart"}, r"^unknown target: one of \['fetal_abdomen', "),
        ({"methd": "shap"}, r"^unknown parameters: \":explain\" takes \['method', 'target'\]$"),
        (["shap"], '"parameters" must be an object'),
    ],
)
def test_explain_parameters_a_client_got_wrong(
    featured: PlanePredictor, pngs: list[bytes], parameters: object, reason: str
) -> None:
    request = {"instances": body(pngs[:1])["instances"], "parameters": parameters}
    with pytest.raises(InvalidInput, match=reason):
        explain(featured, request)


def test_a_bulk_explanation_is_refused(featured: PlanePredictor, pngs: list[bytes]) -> None:
    instances = body(pngs[:1])["instances"] * (MAX_IMAGES + 1)
    with pytest.raises(InvalidInput, match=f"at most {MAX_IMAGES} a request"):
        explain(featured, {"instances": instances})


def check_answer(answer: dict[str, Any], method: str, target: str) -> NDArray[np.float64]:
    assert set(answer) == ANSWER_KEYS | ({"samples"} if method == "shap" else set())
    assert (answer["method"], answer["target"]) == (method, target)
    assert (answer["model_name"], answer["model_version"]) == (NAME, str(VERSION))
    assert answer["arm"] == "champion"
    assert list(answer["probabilities"]) == CLASSES and answer["label"] in CLASSES
    assert answer["heatmap"]["shape"] == [SIZE, SIZE] and answer["elapsed_ms"] > 0
    heatmap = np.array(answer["heatmap"]["data"])
    assert heatmap.shape == (SIZE, SIZE)
    assert np.array_equal(heatmap, np.round(heatmap, 4))
    assert decoded(base64.b64decode(answer["heatmap_png"])).shape == (SIZE, SIZE, 3)
    return heatmap


def test_explain_grad_cam_through_kserves_pipeline(
    featured: PlanePredictor, pngs: list[bytes]
) -> None:
    predictions = asyncio.run(featured(body(pngs[:2])))[0]["predictions"]

    default = explain(featured, body(pngs[:2]))
    left = explain(featured, body(pngs[:1], target=CLASSES[0]))[0]
    right = explain(featured, body(pngs[:1], method="gradcam", target=CLASSES[1]))[0]

    for answer, prediction in zip(default, predictions, strict=True):
        heatmap = check_answer(answer, "gradcam", prediction["label"])
        assert answer["probabilities"] == pytest.approx(prediction["probabilities"], abs=1e-6)
        assert heatmap.min() >= 0 and heatmap.max() == 1.0
    assert left_share(check_answer(left, "gradcam", CLASSES[0])[None])[0] > 0.95
    assert left_share(check_answer(right, "gradcam", CLASSES[1])[None])[0] < 0.05


@pytest.fixture(scope="module")
def archive(layout: ModelLayout, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The conftest's version, exported and packaged by `fetalmlops.archive`, as the trainer's."""
    return open_version(layout.root, tmp_path_factory.mktemp("cache"))


@pytest.mark.usefixtures("shap_imported")
def test_explain_through_the_predictor_of_the_trainers_archive(
    archive: Archive, pngs: list[bytes]
) -> None:
    predictor = PlanePredictor(archive, options=Options(explain_timeout_s=3.0))
    predictor.load()
    assert predictor.serving().champion.classifier.background is not None

    # Thrice: TorchScript optimises a method after its first calls.
    runs = [explain(predictor, body(pngs[:2])) for _ in range(3)]
    start = time.monotonic()
    answers = explain(predictor, body(pngs[:2], method="shap", target="fetal_brain"))
    elapsed = time.monotonic() - start

    for answer in runs[0]:
        heatmap = check_answer(answer, "gradcam", answer["label"])
        assert heatmap.min() >= 0 and heatmap.max() == 1.0
    maps = np.array([[answer["heatmap"]["data"] for answer in run] for run in runs])
    np.testing.assert_allclose(maps[1:], maps[:1].repeat(2, axis=0), atol=2e-4)
    assert len(answers) == 2
    for answer in answers:
        heatmap = check_answer(answer, "shap", "fetal_brain")
        assert 0 < answer["samples"] <= 200 and np.abs(heatmap).max() > 0
    assert elapsed < 4.5


@pytest.mark.usefixtures("shap_imported")
def test_grad_cam_without_features_is_refused_naming_shap(
    plain: PlanePredictor, pngs: list[bytes]
) -> None:
    with pytest.raises(InvalidInput, match='ask for "method": "shap"'):
        explain(plain, body(pngs[:1]))
    answer = explain(plain, body(pngs[:1], method="shap", target=CLASSES[1]))[0]
    right = check_answer(answer, "shap", CLASSES[1])
    assert left_share(right[None])[0] < 0.05
