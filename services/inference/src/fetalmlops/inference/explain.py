"""Why the model answered what it did: Grad-CAM and SHAP heatmaps for KServe's ``:explain``.

Two methods, both run on the archive's TorchScript:

* ``gradcam`` (Selvaraju et al., 2017), the fast path: one forward and one backward pass
  through the model's ``forward_with_features``. The target class's gradient, averaged over
  each channel of the last feature map, weighs the channels; the ReLU of their weighted sum,
  upsampled to the input and scaled to [0, 1], is where the evidence for the class lies. It is
  as coarse as the feature map (7 x 7 for a ResNet at 224 pixels).
* ``shap``: expected gradients (``shap.GradientExplainer``; Erion et al., 2021), signed
  per-pixel attributions against a background of images, summed over channels. Each sample
  costs a forward and a backward pass, so it draws as many as the time budget allows and says
  how many. The background is the archive's own (training images); for an archive without one,
  each image is compared with two references: a black image, and the image blurred to a
  sixteenth of its size (what the model makes of the picture without its detail).

The request is ``:predict``'s V1 body with optional parameters::

    {"instances": [{"b64": "<PNG, JPEG or DICOM>"}, ...],
     "parameters": {"method": "gradcam" | "shap", "target": "<plane>"}}

and each image is answered with (the predictor adds ``model_name`` and ``model_version``)::

    {"label", "probabilities", "target", "method", "heatmap": {"shape": [h, w], "data": [[...]]},
     "heatmap_png": "<base64 PNG>", "samples" (shap only), "elapsed_ms"}

``target`` defaults to the predicted plane; ``elapsed_ms`` is the whole request's. Every client
mistake raises `refusals.Refused` (HTTP 400).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from fetalmlops.inference.archive import Archive, Classifier
from fetalmlops.inference.heatmap import greyscale_picture, heatmap_png
from fetalmlops.inference.protocol import Batch
from fetalmlops.inference.refusals import Refused

# The first round is timed to size the next ones; it runs whatever the budget, so it is small
# (a ResNet-18 sample takes about 0.3 s on two CPU cores).
FIRST_SAMPLES = 2
ROUND_SAMPLES = 64  # shap holds a round's samples as images, and their deltas in float64
MAX_SAMPLES = 200  # shap's own default: beyond it, more samples barely move the map
SAFETY = 0.9  # share of the time left a round is sized to fill
BLUR = 16  # the blurred reference keeps 1/BLUR of the image's resolution

Features = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class Method(StrEnum):
    GRADCAM = "gradcam"
    SHAP = "shap"


PARAMETERS = ("method", "target")
# An explanation costs a backward pass (Grad-CAM) or many (SHAP) per image: a viewer asks for
# the image on screen, and a bulk request must not hold the model for minutes.
MAX_IMAGES = 8


@dataclass(frozen=True)
class ExplanationRequest:
    images: torch.Tensor
    method: Method = Method.GRADCAM
    target: str | None = None  # a class name; None: the predicted class


def explanation_request(batch: Batch, archive: Archive) -> ExplanationRequest:
    """The images and parameters of an ``:explain`` body, as ``preprocess`` decoded it."""
    return with_parameters(batch.tensor, batch.parameters, archive)


def with_parameters(
    images: torch.Tensor, parameters: object, archive: Archive
) -> ExplanationRequest:
    # The reasons name what ":explain" takes, never the names or values a client sent.
    if len(images) > MAX_IMAGES:
        raise Refused(f"{len(images)} images to explain: at most {MAX_IMAGES} a request")
    if parameters is None:
        return ExplanationRequest(images)
    if not isinstance(parameters, dict):
        raise Refused(f'"parameters" must be an object, not {type(parameters).__name__}')
    if set(parameters) - set(PARAMETERS):
        raise Refused(f'unknown parameters: ":explain" takes {list(PARAMETERS)}')
    method = parameters.get("method", Method.GRADCAM.value)
    methods = [m.value for m in Method]
    if not isinstance(method, str) or method not in methods:
        raise Refused(f"unknown method: one of {methods}")
    target = parameters.get("target")
    if target is not None and target not in archive.classes:
        raise Refused(f"unknown target: one of {list(archive.classes)}")
    return ExplanationRequest(images, Method(method), target)


def explanations(
    request: ExplanationRequest, classifier: Classifier, transform: Any, budget_s: float
) -> list[dict[str, Any]]:
    """One answer per image (see the module's docstring); ``transform`` is the archive's."""
    start = time.monotonic()
    if request.method is Method.GRADCAM and not classifier.has_features:
        raise Refused(
            "this model version was exported without the feature map Grad-CAM needs: "
            f'ask for "method": "{Method.SHAP}"'
        )
    images = request.images.to(classifier.device)
    probabilities = classifier.probabilities(images)
    targets = (
        [classifier.classes.index(request.target)] * len(images)
        if request.target is not None
        else [int(i) for i in probabilities.argmax(dim=1)]
    )
    samples: int | None = None
    if request.method is Method.GRADCAM:
        heatmaps = grad_cam(classifier.model.forward_with_features, images, targets)
    else:
        heatmaps, samples = shap_attributions(
            classifier.model,
            images,
            classifier.background,
            targets,
            budget_s - (time.monotonic() - start),
            black=-float(transform.mean) / float(transform.std),
        )
    answers = []
    for image, row, target, heatmap in zip(images, probabilities, targets, heatmaps, strict=True):
        picture = greyscale_picture(image.cpu().numpy(), transform.mean, transform.std)
        png = heatmap_png(heatmap, picture, signed=request.method is Method.SHAP)
        answer = {
            **classifier.prediction(row),
            "target": classifier.classes[target],
            "method": str(request.method),
            "heatmap": {"shape": list(heatmap.shape), "data": rounded(heatmap)},
            "heatmap_png": base64.b64encode(png).decode("ascii"),
        }
        if samples is not None:
            answer["samples"] = samples
        answers.append(answer)
    elapsed_ms = round((time.monotonic() - start) * 1000, 1)
    return [{**answer, "elapsed_ms": elapsed_ms} for answer in answers]


def rounded(heatmap: NDArray[np.float32]) -> list[list[float]]:
    """The map with 4 decimals, as JSON numbers.

    Rounded in float64, as float32's 0.0001 reads 9.99999975e-05; adding 0.0 makes -0.0 zero.
    """
    values: list[list[float]] = (np.round(heatmap.astype(np.float64), 4) + 0.0).tolist()
    return values


def grad_cam(
    forward_with_features: Features, images: torch.Tensor, targets: Sequence[int] | None = None
) -> NDArray[np.float32]:
    """Grad-CAM maps (N, H, W) in [0, 1] of ``targets`` (default: the predicted classes).

    ``forward_with_features(x)`` returns (logits, embedding, feature map (N, C, h, w)), the
    logits differentiable with respect to the feature map. A map with no positive evidence for
    its class is all zeros.
    """
    # The caller may run under inference mode (as predictions do): gradients need it off.
    # TorchScript optimises a method after its first call: for inputs that require grad, the
    # ops from feature map to logits become one autograd node (a DifferentiableGraph) and the
    # feature map drops out of the logits' graph. So this runs unoptimised (a per-thread
    # switch); plans optimised for inference-mode calls elsewhere guard on requires_grad, and
    # these inputs take their unoptimised fallback.
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.jit.optimized_execution(False),  # type: ignore[attr-defined]
    ):
        # An input that requires grad keeps the graph even where the weights are frozen.
        inputs = images.detach().clone().requires_grad_(True)
        logits, _embedding, feature_map = forward_with_features(inputs)
        chosen = (
            logits.argmax(dim=1)
            if targets is None
            else torch.as_tensor(list(targets), device=logits.device)
        )
        # Images do not interact in an eval-mode model: one backward pass serves the batch.
        score = logits.gather(1, chosen.view(-1, 1)).sum()
        (gradients,) = torch.autograd.grad(score, feature_map, allow_unused=True)
    if gradients is None:
        raise RuntimeError("the model's logits do not depend on its feature map through autograd")
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * feature_map.detach()).sum(dim=1, keepdim=True))
    cam = upsampled(cam, (images.shape[-2], images.shape[-1]))[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), 0.0)
    return cam.float().cpu().numpy()


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps (N, C, h, w) bilinearly resized to ``size`` (height, width)."""
    return functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class TargetLogit(nn.Module):
    """One class's logit as the model's only output: what GradientExplainer attributes.

    shap explains every output unless told otherwise, and its PyTorch path cannot be told which
    one (``output_rank_order="custom"`` is TensorFlow's only): this picks it.
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.target = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits[:, self.target : self.target + 1]


def fallback_background(image: torch.Tensor, black: float | None = None) -> torch.Tensor:
    """Two references (2, C, H, W) for one image (C, H, W) when the archive brings none.

    A black image (``black`` is black in the model's input space, default the image's darkest
    value) and a blurred copy: attributions then say what the detail of the picture adds.
    """
    dark = torch.full_like(image, float(image.min()) if black is None else black)
    height, width = image.shape[-2:]
    coarse = functional.adaptive_avg_pool2d(
        image[None], (max(1, height // BLUR), max(1, width // BLUR))
    )
    return torch.cat([dark[None], upsampled(coarse, (height, width))])


def shap_attributions(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    background: torch.Tensor | None,
    targets: Sequence[int] | None,
    budget_s: float,
    *,
    black: float | None = None,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> tuple[NDArray[np.float32], int]:
    """Expected-gradients attributions (N, H, W), summed over channels, and the samples used.

    ``model`` maps images to logits; ``background`` (B, C, H, W) is shared by all images, None
    uses `fallback_background`. Samples are drawn in rounds, each mean of independent samples
    weighted into the total, the first round small and timed so the later ones fill the
    budget without passing it; at least the first round runs, however small the budget.
    """
    start = time.monotonic()
    # Imported here, inside the budget: shap brings pandas, scikit-learn and numba (seconds),
    # which Grad-CAM's callers need not pay for.
    import shap

    with torch.inference_mode(False), torch.enable_grad():
        inputs = images.detach().clone()
        if targets is None:
            with torch.no_grad():
                targets = [int(i) for i in model(inputs).argmax(dim=1)]
        scorer = TargetLogit(model)
        # GradientExplainer runs the model on its background only to count the outputs.
        with torch.no_grad():
            shared = None
            if background is not None:
                shared = shap.GradientExplainer(scorer, background.to(inputs.device).clone())
            explainers = [
                shap.GradientExplainer(scorer, fallback_background(image, black))
                if shared is None
                else shared
                for image in inputs
            ]
        totals = np.zeros(tuple(inputs.shape), dtype=np.float64)
        used, size, round_number = 0, min(FIRST_SAMPLES, max_samples), 0
        while size > 0:
            began = time.monotonic()
            for index, (explainer, target) in enumerate(zip(explainers, targets, strict=True)):
                scorer.target = int(target)
                # rseed reseeds numpy's global generator (shap draws from no other): the same
                # request gets the same map.
                values = explainer.shap_values(
                    inputs[index : index + 1], nsamples=size, rseed=seed + round_number
                )
                totals[index] += size * np.asarray(values)[0, ..., 0]
            used += size
            per_sample = max((time.monotonic() - began) / size, 1e-9)
            left = budget_s - (time.monotonic() - start)
            size = max(0, min(ROUND_SAMPLES, max_samples - used, int(SAFETY * left / per_sample)))
            round_number += 1
    return (totals.sum(axis=1) / used).astype(np.float32), used
