"""The data pipeline and the training loop, on phantom images drawn once for the module.

The phantom's scanners are drawn at half their frame size (the same anatomy and classes, four
times faster to draw), the imaging sector cropped as in the anonymizer's canonical PNG. Every
run uses the `tiny` backbone at 64 pixels on the CPU.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fetalmlops.archive.preprocessing import Preprocessing, decode
from fetalmlops.common.planes import Plane
from fetalmlops.datasets.phantom.dataset import ImageSpec, plan, sector_png
from fetalmlops.trainer.backbones import Strategy, build
from fetalmlops.trainer.data import (
    Augmentation,
    Item,
    LabelledImages,
    balanced_sampler,
    class_weights,
    labels_of,
)
from fetalmlops.trainer.optimisation import warmup_cosine
from fetalmlops.trainer.training import CheckpointMismatch, TrainConfig, TrainResult, train

SEED, PATIENTS, SIDE = 3, 60, 96
CLASSES = [p.value for p in Plane]
PREP = Preprocessing(size=64)
# Short runs for the properties of the loop; the learning test trains longer.
QUICK = TrainConfig(input_size=64, epochs=4, learning_rate=5e-3, batch_size=16, patience=4)
TIMINGS = ("seconds", "images_per_second")


@dataclass(frozen=True)
class Phantom:
    train: list[Item]
    val: list[Item]

    @property
    def few(self) -> list[Item]:
        return self.train[:64]


def canonical_png(spec: ImageSpec) -> bytes:
    return sector_png(spec, SEED, SIDE)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # The tiny network's convolutions gain little from a second thread, and on a busy runner
    # OpenMP's barriers stall whenever one of two threads is descheduled (three times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Phantom:
    specs = plan(PATIENTS, SEED, ("highend-a", "highend-b"))
    with ProcessPoolExecutor(2) as pool:
        pngs = list(pool.map(canonical_png, specs, chunksize=8))
    folder = tmp_path_factory.mktemp("phantom")
    train: list[Item] = []
    val: list[Item] = []
    for spec, png in zip(specs, pngs, strict=True):
        path = folder / f"{spec.image_id}.png"
        path.write_bytes(png)
        # Held-out patients (val and test splits) validate: the split is by patient.
        (train if spec.split == "train" else val).append(
            (path.read_bytes, CLASSES.index(spec.plane))
        )
    return Phantom(train, val)


def comparable(result: TrainResult) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in result.history]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the data pipeline -------------------------------------------------------------------------


def test_without_augmentation_training_sees_exactly_what_serving_sees(phantom: Phantom) -> None:
    dataset = LabelledImages(phantom.val[:8], PREP)
    for (load, label), (tensor, got) in zip(phantom.val[:8], dataset, strict=True):
        assert got == label
        assert torch.equal(tensor, decode(load(), PREP))


def test_augmentation_is_a_function_of_seed_epoch_and_image(phantom: Phantom) -> None:
    def tensors(epoch: int, seed: int = 0, workers: int = 0) -> torch.Tensor:
        dataset = LabelledImages(phantom.train[:12], PREP, Augmentation(), seed=seed)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=4, num_workers=workers)
        return torch.cat([images for images, _ in loader])

    first = tensors(epoch=1)
    assert torch.equal(first, tensors(epoch=1, workers=2))
    assert not torch.equal(first, tensors(epoch=2))
    assert not torch.equal(first, tensors(epoch=1, seed=1))
    plain = torch.stack([t for t, _ in LabelledImages(phantom.train[:12], PREP)])
    assert first.shape == plain.shape
    assert 0.001 < (first - plain).abs().mean() < 1.0


def test_augmentation_never_turns_the_sector_upside_down() -> None:
    # A fan's apex (the transducer) is at the top: bright above, dark below.
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[:24] = 200
    picture = Image.fromarray(pixels)
    augment = Augmentation()
    for k in range(50):
        varied = np.asarray(augment(picture, torch.Generator().manual_seed(k)), dtype=float)
        assert varied[:20].mean() > 4 * varied[-20:].mean(), k


def test_class_weights_are_inverse_frequency_with_mean_one_per_image() -> None:
    labels = [0] * 6 + [1] * 3 + [3] * 3  # class 2 absent
    weights = class_weights(labels, 4)
    assert weights.tolist() == pytest.approx([2 / 3, 4 / 3, 0.0, 4 / 3])
    assert float(weights[labels].mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        class_weights([0, 4], 4)


def test_the_balanced_sampler_draws_classes_evenly() -> None:
    labels = [0] * 900 + [1] * 100
    sampler = balanced_sampler(labels, 2, torch.Generator().manual_seed(0))
    drawn = np.array(labels)[list(sampler)]
    assert len(drawn) == 1000
    assert 0.4 < drawn.mean() < 0.6


def test_the_learning_rate_warms_up_then_decays_to_zero() -> None:
    factors = [warmup_cosine(step, 10, 100) for step in range(100)]
    assert factors[:10] == sorted(factors[:10]) and factors[0] < 0.2
    assert factors[10] == 1.0
    assert factors[10:] == sorted(factors[10:], reverse=True)
    assert factors[-1] < 1e-3


# --- the loop ----------------------------------------------------------------------------------


def test_the_tiny_network_learns_the_phantom(phantom: Phantom, tmp_path: Path) -> None:
    config = TrainConfig(input_size=64, epochs=25, learning_rate=5e-3, patience=25)
    result = train(config, phantom.train, phantom.val, CLASSES, tmp_path, progress=False)
    print([round(r["val_macro_f1"], 3) for r in result.history], result.train_images_per_second)

    assert result.best_val_macro_f1 >= 0.8
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 2
    assert result.best_val_macro_f1 == max(r["val_macro_f1"] for r in result.history)
    assert result.history[result.best_epoch - 1]["val_macro_f1"] == result.best_val_macro_f1
    # The returned model is the best epoch's, ready to serve on the CPU.
    assert not result.model.training
    assert all(p.device.type == "cpu" for p in result.model.parameters())
    assert result.val_logits.shape == (len(phantom.val), len(CLASSES))
    assert np.array_equal(result.val_labels, labels_of(phantom.val))
    from fetalmlops.trainer.evaluation import macro_f1

    predicted = result.val_logits.argmax(1)
    assert macro_f1(result.val_labels, predicted, len(CLASSES)) == result.best_val_macro_f1
    assert result.resumed_from_epoch is None and result.epochs_run == 25
    assert result.train_images_per_second > 0


@pytest.fixture(scope="module")
def reference(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """An uninterrupted short run, which others must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    return train(QUICK, phantom.few, phantom.val, CLASSES, folder, progress=False)


def test_the_same_seed_gives_the_same_history_and_weights(
    phantom: Phantom, reference: TrainResult, tmp_path: Path
) -> None:
    again = train(QUICK, phantom.few, phantom.val, CLASSES, tmp_path / "a", progress=False)
    assert comparable(again) == comparable(reference)
    assert same_weights(again.model, reference.model)
    assert np.array_equal(again.val_logits, reference.val_logits)

    other = dataclasses.replace(QUICK, seed=1)
    different = train(other, phantom.few, phantom.val, CLASSES, tmp_path / "b", progress=False)
    assert comparable(different) != comparable(reference)


class Killed(Exception):
    """A pod killed after an epoch's checkpoint reached the disk."""


def test_a_run_killed_after_an_epoch_resumes_to_the_same_result(
    phantom: Phantom, reference: TrainResult, tmp_path: Path
) -> None:
    def kill_after_epoch_2(record: dict[str, float]) -> None:
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(QUICK, phantom.few, phantom.val, CLASSES, tmp_path, False, kill_after_epoch_2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left over

    torch.manual_seed(12345)  # a new process's RNGs are elsewhere: the checkpoint restores them
    resumed = train(QUICK, phantom.few, phantom.val, CLASSES, tmp_path, progress=False)

    assert resumed.resumed_from_epoch == 2
    assert comparable(resumed) == comparable(reference)
    assert same_weights(resumed.model, reference.model)
    assert resumed.best_epoch == reference.best_epoch


def test_a_checkpoint_of_another_run_is_an_error(phantom: Phantom, tmp_path: Path) -> None:
    one_epoch = dataclasses.replace(QUICK, epochs=1)
    train(one_epoch, phantom.few, phantom.val, CLASSES, tmp_path, progress=False)

    with pytest.raises(CheckpointMismatch, match=r"different run \(epochs: 1 there, 2 here"):
        train(
            dataclasses.replace(one_epoch, epochs=2),
            phantom.few,
            phantom.val,
            CLASSES,
            tmp_path,
            progress=False,
        )
    with pytest.raises(CheckpointMismatch, match="train_labels"):
        train(one_epoch, phantom.train[64:128], phantom.val, CLASSES, tmp_path, progress=False)
    # Only the speed changes with the number of workers: that checkpoint continues.
    faster = dataclasses.replace(one_epoch, num_workers=2)
    finished = train(faster, phantom.few, phantom.val, CLASSES, tmp_path, progress=False)
    assert finished.resumed_from_epoch == 1 and finished.epochs_run == 1


def test_training_stops_early_when_val_macro_f1_stops_improving(
    phantom: Phantom, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing can move (frozen encoder, zero learning rate): every epoch scores as the first.
    frozen = TrainConfig(
        input_size=64, epochs=10, patience=2, learning_rate=0.0, strategy=Strategy.LINEAR_PROBE
    )
    result = train(frozen, phantom.few, phantom.val, CLASSES, tmp_path, progress=True)
    assert result.epochs_run == 3 and len(result.history) == 3
    shown = capsys.readouterr().out
    assert "epoch 3/10" in shown and "epoch 4/10" not in shown
    assert f"val macro-F1 {result.best_val_macro_f1:.3f}" in shown
    assert result.best_epoch == 1
    assert len({r["val_macro_f1"] for r in result.history}) == 1

    again = train(frozen, phantom.few, phantom.val, CLASSES, tmp_path, progress=False)
    assert again.resumed_from_epoch == 3 and again.epochs_run == 3


def test_linear_probing_changes_the_head_alone(phantom: Phantom, tmp_path: Path) -> None:
    torch.manual_seed(7)
    pretrained = build("tiny", len(CLASSES), Strategy.FINE_TUNE).state_dict()
    for key, value in pretrained.items():
        if key.endswith(("running_mean", "running_var")):
            value.uniform_(0.5, 1.5)
    weights = tmp_path / "pretrained.pt"
    torch.save(pretrained, weights)
    config = dataclasses.replace(
        QUICK, epochs=1, strategy=Strategy.LINEAR_PROBE, weights=weights, learning_rate=0.05
    )
    torch.manual_seed(config.seed)  # as train does, to know the new head's initial weights
    initial = build("tiny", len(CLASSES), config.strategy, weights).state_dict()

    result = train(config, phantom.few, phantom.val, CLASSES, tmp_path / "run", progress=False)

    trained = result.model.state_dict()
    assert trained.keys() == initial.keys()
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    for key, value in trained.items():
        if not key.startswith("classifier."):
            assert torch.equal(value, pretrained[key]), key


def test_a_run_leaves_the_caller_s_random_generators_as_it_found_them(
    phantom: Phantom, tmp_path: Path
) -> None:
    random.seed(2026)
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(2026)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)

    train(TrainConfig(input_size=64, epochs=1), phantom.few, phantom.val, CLASSES, tmp_path, False)

    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
