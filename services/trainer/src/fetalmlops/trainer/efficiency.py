"""How heavy a model is to ship and to run: parameters, size on disk, per-image CPU latency.

These figures go into the model card beside the clinical metrics: a scanner-side or
clinic-server deployment runs on CPU, one image at a time, so that is what is timed.

``measure`` borrows the caller's model and gives it back as it found it: the weights are not
touched (inference mode, every module in eval so batch-norm statistics stay put), and the
model's device, the train/eval flag of each submodule and torch's intra-op thread count are
restored afterwards, even when the forward pass raises.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Efficiency:
    parameters: int
    trainable_parameters: int
    # Megabytes (10^6 bytes) of the `torch.save`d state_dict, buffers included: what the
    # weights file in the `.mar` weighs. A state_dict, not TorchScript, because every model has
    # one while not every model scripts.
    size_mb: float
    cpu_latency_ms_p50: float
    cpu_latency_ms_p95: float
    threads: int
    input_shape: tuple[int, ...]  # one image, without the batch dimension

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["input_shape"] = list(self.input_shape)
        return values


def measure(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    runs: int = 20,
    warmup: int = 3,
    threads: int = 1,
) -> Efficiency:
    """Size and CPU latency of ``model`` on one image of ``input_shape`` (e.g. ``(3, 224, 224)``).

    Latency is wall-clock per forward pass of a batch of one, after ``warmup`` untimed passes,
    with torch limited to ``threads`` intra-op threads; p50 and p95 over ``runs`` passes.
    """
    if not input_shape or any(side < 1 for side in input_shape):
        raise ValueError(f"input_shape must be non-empty positive sides, got {input_shape}")
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(
            f"need runs >= 1, warmup >= 0, threads >= 1; got {runs}, {warmup}, {threads}"
        )
    parameters = list(model.parameters())
    size_mb = state_dict_bytes(model) / 1e6
    with _borrowed_on_cpu(model), _intra_op_threads(threads):
        example = torch.randn(
            (1, *input_shape), generator=torch.Generator().manual_seed(0), dtype=_input_dtype(model)
        )
        timings_ms = _forward_timings_ms(model, example, runs, warmup)
    return Efficiency(
        parameters=sum(p.numel() for p in parameters),
        trainable_parameters=sum(p.numel() for p in parameters if p.requires_grad),
        size_mb=size_mb,
        cpu_latency_ms_p50=float(np.percentile(timings_ms, 50)),
        cpu_latency_ms_p95=float(np.percentile(timings_ms, 95)),
        threads=threads,
        input_shape=tuple(input_shape),
    )


def state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _forward_timings_ms(
    model: torch.nn.Module, example: torch.Tensor, runs: int, warmup: int
) -> list[float]:
    timings = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(example)
        for _ in range(runs):
            start = time.perf_counter_ns()
            model(example)
            timings.append((time.perf_counter_ns() - start) / 1e6)
    return timings


def _input_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@contextmanager
def _borrowed_on_cpu(model: torch.nn.Module) -> Iterator[None]:
    """The model on CPU in eval mode for the duration; its device and modes restored after.

    Each submodule's flag is restored, not just the root's: `model.train(flag)` would also
    flip submodules the caller had deliberately frozen in eval (a fine-tuned backbone's BN).
    """
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    if len(devices) > 1:
        raise ValueError(f"model is spread over several devices: {sorted(map(str, devices))}")
    modes = [(module, module.training) for module in model.modules()]
    model.to("cpu").eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        if devices:
            model.to(devices.pop())


@contextmanager
def _intra_op_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
