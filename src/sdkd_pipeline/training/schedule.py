"""The learning-rate schedule: warmup, then constant, cosine or plateau (``LRSchedule``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sdkd_pipeline.training.config import TrainConfig


class LRSchedule:
    """Warmup, then constant / cosine / plateau, as one factor on the base rate.

    One object rather than chained torch schedulers because a plateau scheduler and a per-step
    warmup both write the rate and would overwrite each other; its state is a few numbers.
    """

    def __init__(self, cfg: TrainConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def lr(self) -> float:
        cfg = self.cfg
        lr = cfg.lr
        if cfg.schedule == "cosine":
            progress = min(1.0, self.step_count / self.total_steps)
            lr = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
        elif cfg.schedule == "plateau":
            lr = cfg.lr * self.plateau_scale
        if cfg.warmup_steps and self.step_count < cfg.warmup_steps:
            lr *= (self.step_count + 1) / (cfg.warmup_steps + 1)
        return lr

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        lr = self.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def observe_validation(self, val_loss: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if val_loss < self.plateau_best - self.cfg.min_delta:
            self.plateau_best, self.plateau_bad = val_loss, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, float | int]:
        return {
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
        }

    def load_state_dict(self, state: Mapping[str, float | int]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])
