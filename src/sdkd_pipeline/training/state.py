"""What a training run carries and returns: ``_State`` (what ``last.pt`` restores besides
model, optimizer, schedule and loss) and ``TrainResult`` (what ``train`` returns)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    """What a training run produced. ``history`` has one dict per epoch (epoch, train_loss,
    val_loss (NaN when not validated that epoch), lr, time_s, samples, train_<component>)."""

    best_val_loss: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]]
    test_loss: float | None
    best_checkpoint: Path
    last_checkpoint: Path
    samples_per_second: float
    resumed_from_epoch: int | None = None

    @property
    def stop_reason(self) -> str:
        """Why training ended: ``early_stopping`` (validation stopped improving for
        ``patience`` validations) or ``max_epochs`` (the budget ran out first)."""
        return "early_stopping" if self.stopped_early else "max_epochs"


@dataclass
class _State:
    """What ``last.pt`` restores besides model, optimizer, schedule and loss."""

    epochs_done: int = 0
    step_in_epoch: int = 0  # batches of the current (unfinished) epoch already trained on
    partial: dict[str, float] = field(default_factory=dict)  # running sums of that epoch
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
