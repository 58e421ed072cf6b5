import json

import pytest
import torch
from torch import nn

from fetalmlops.trainer.efficiency import Efficiency, measure, state_dict_bytes


def tiny() -> nn.Sequential:
    # Conv 3->4, 3x3: 4·3·3·3 + 4 = 112; BatchNorm(4): 4 + 4 = 8 (its running statistics
    # are buffers, not parameters); Linear 4->6: 4·6 + 6 = 30. In all 150.
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
    )


def test_parameters_are_counted_by_hand() -> None:
    model = tiny()
    model[0].requires_grad_(False)  # a frozen stem: 112 of the 150 not trainable

    result = measure(model, (3, 16, 16), runs=3, warmup=1)

    assert result.parameters == 150
    assert result.trainable_parameters == 38
    assert result.input_shape == (3, 16, 16)
    assert result.threads == 1


def test_size_is_the_saved_state_dict_and_grows_with_parameters() -> None:
    small, large = nn.Linear(10, 10), nn.Linear(100, 1000)

    small_size = measure(small, (10,), runs=1, warmup=0).size_mb
    large_size = measure(large, (100,), runs=1, warmup=0).size_mb

    assert small_size == state_dict_bytes(small) / 1e6
    # 101 000 float32 weights are 0.404 MB; pickling adds little on top.
    assert 0.404 <= large_size < 0.42
    assert large_size > 100 * small_size


def test_latency_is_positive_and_a_far_heavier_model_is_slower() -> None:
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    # Over 500x the multiply-adds of `small` on the same 64x64 input: 8·3·9 = 216 per pixel
    # against 64·3·9 + 3·(64·64·9) = 112 320, so timing noise cannot reverse the order.
    large = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        *[nn.Conv2d(64, 64, 3, padding=1) for _ in range(3)],
    )

    fast = measure(small, (3, 64, 64), runs=10, warmup=2)
    slow = measure(large, (3, 64, 64), runs=10, warmup=2)

    assert 0 < fast.cpu_latency_ms_p50 <= fast.cpu_latency_ms_p95
    assert slow.cpu_latency_ms_p50 > fast.cpu_latency_ms_p50


def test_threads_mode_and_weights_are_given_back_as_they_were() -> None:
    model = tiny()
    model.train()
    model[1].eval()  # a frozen batch-norm inside a model being trained
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    threads = torch.get_num_threads()

    measure(model, (3, 16, 16), runs=5, warmup=2, threads=threads + 1)

    assert torch.get_num_threads() == threads
    assert model.training and not model[1].training and model[0].training
    after = model.state_dict()
    # In train mode the batch-norm running statistics would have moved on the random input.
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_threads_are_restored_when_the_forward_pass_fails() -> None:
    threads = torch.get_num_threads()
    model = nn.Linear(4, 2).train()

    with pytest.raises(RuntimeError):
        measure(model, (5,), runs=1, warmup=0, threads=threads + 1)

    assert torch.get_num_threads() == threads
    assert model.training


def test_a_double_precision_model_is_fed_double_precision() -> None:
    assert measure(nn.Linear(4, 2).double(), (4,), runs=1, warmup=0).parameters == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to leave the model on")
def test_a_model_on_the_gpu_is_timed_on_cpu_and_put_back() -> None:
    model = tiny().cuda()

    result = measure(model, (3, 16, 16), runs=2, warmup=1)

    assert result.cpu_latency_ms_p50 > 0
    assert all(p.is_cuda for p in model.parameters())


def test_to_dict_is_plain_json() -> None:
    result = measure(tiny(), (3, 16, 16), runs=2, warmup=0)
    as_dict = result.to_dict()

    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["input_shape"] == [3, 16, 16]
    assert set(as_dict) == set(Efficiency.__dataclass_fields__)


@pytest.mark.parametrize(
    ("shape", "runs", "warmup", "threads"),
    [((), 1, 0, 1), ((3, 0), 1, 0, 1), ((4,), 0, 0, 1), ((4,), 1, -1, 1), ((4,), 1, 0, 0)],
)
def test_nonsense_settings_are_refused(
    shape: tuple[int, ...], runs: int, warmup: int, threads: int
) -> None:
    with pytest.raises(ValueError):
        measure(nn.Linear(4, 2), shape, runs=runs, warmup=warmup, threads=threads)
