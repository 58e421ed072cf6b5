"""Checkpoints a restarted Job resumes from: written atomically, refused when another run's.

A checkpoint holds what the training loop hands it, the run's identity (its configuration and
data), and every random generator's state (torch, CUDA, numpy, Python), so the epoch after a
resume draws exactly what it would have drawn without the interruption.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 1


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another run; resuming from it would mix two experiments."""


def save(path: Path, identity: dict[str, Any], content: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``: a kill at any
    moment leaves either the previous checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, "identity": identity, "rng": rng_states(), **content}
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=".last-", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The saved content, with the random generators restored; CheckpointMismatch, naming
    every difference, when the checkpoint is another run's."""
    document: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    saved = document.get("identity", {}) if document.get("format") == FORMAT else {}
    if saved != identity:
        differences = ", ".join(
            f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} here"
            for k in sorted(saved.keys() | identity.keys())
            if saved.get(k) != identity.get(k)
        )
        raise CheckpointMismatch(
            f"{path} was written by a different run ({differences}); "
            "delete it or train into another checkpoint directory"
        )
    set_rng_states(document["rng"])
    return document


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # legacy=True: the MT19937 tuple
    kind, keys, position, has_gauss, cached = numpy_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # Plain lists and ints, so that the checkpoint loads with weights_only=True.
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
