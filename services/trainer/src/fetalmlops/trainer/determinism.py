"""The same result every time: a seeded run on deterministic kernels.

A fixed seed fixes the model's initial weights, the order of every epoch and every augmentation
(each a function of seed and epoch, see `data`), and torch runs its deterministic kernels where
it has them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from fetalmlops.trainer import checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the caller's setting and random
    generators restored after.

    warn_only: a few CUDA kernels (adaptive pooling's backward) have no deterministic version;
    a warning then says so rather than the run failing.
    """
    # cuBLAS reads this when it initialises; a process that already used CUDA keeps its value.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    # The run seeds the process-wide generators; the caller's draws must not become the
    # run's seed's (a test suite's "random" ids would repeat from one run to the next).
    generators = checkpoint.rng_states()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        checkpoint.set_rng_states(generators)
