"""Early stopping on the validation macro-F1, and the run's progress it is decided on.

A run keeps the weights of its best epoch, not its last, and stops once `patience` epochs in a
row have not beaten it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

EpochRecord = dict[str, float]


@dataclass
class RunProgress:
    """Where the run stands: what the next epoch depends on besides the `Fitting`.

    A checkpoint holds these fields by name (`resumption`): renaming one strands the
    checkpoints of the runs in flight.
    """

    epoch: int = 0  # epochs completed
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    stale_epochs: int = 0
    history: list[EpochRecord] = field(default_factory=list)

    def patience_spent(self, patience: int) -> bool:
        return self.stale_epochs >= patience

    def complete(self, epoch: int, record: EpochRecord, model: nn.Module) -> None:
        """Count `epoch` done; keep a CPU copy of `model`'s weights if it scored best so far."""
        score = record["val_macro_f1"]
        if score > self.best_score:
            self.best_score, self.best_epoch, self.stale_epochs = score, epoch, 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        else:
            self.stale_epochs += 1
        self.history.append(record)
        self.epoch = epoch
