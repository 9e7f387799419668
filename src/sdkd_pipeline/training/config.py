"""The training configuration: ``TrainConfig`` (the ``train`` block of the parameters), its
validators, the allowed schedules and precisions, the keys a resumed run may change, and
``autocast_dtype`` (what a ``precision`` means on a device)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import Any

import torch

from sdkd_pipeline.config_utils import known_keys
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

SCHEDULES = (None, "cosine", "plateau")
PRECISIONS = ("auto", "bf16", "fp32")
# Config keys that change how a run executes but not what it computes: a resumed run may differ
# in them (e.g. more DataLoader workers on the new machine).
RESUME_FREE_KEYS = frozenset(
    {"num_workers", "persistent_workers", "checkpoint_every_steps", "resume", "val_batch_size"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (the ``train`` block of the parameters).

    ``patience`` counts validations without an improvement larger than ``min_delta`` (``None``
    disables early stopping); validation runs every ``eval_every`` epochs and after the last one.
    ``schedule``: ``None`` (constant), ``"cosine"`` (per step, from ``lr`` down to ``min_lr``
    over all steps) or ``"plateau"`` (multiply by ``plateau_factor`` after ``plateau_patience``
    validations without improvement); ``warmup_steps`` ramps the rate linearly from 0 under any
    schedule. ``grad_clip`` is a max global L2 norm (``None`` = off). ``device``: ``"auto"``
    (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``. ``precision``: ``"auto"``
    (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``. ``deterministic``: ``None``
    means on for CPU, off for CUDA (where it costs speed). ``max_batches_per_epoch`` caps an
    epoch (a different random subset each epoch). ``checkpoint_every_steps`` also writes
    ``last.pt`` inside epochs (always at the end of each epoch).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str | None = None
    warmup_steps: int = 0
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    grad_clip: float | None = None
    patience: int | None = 10
    min_delta: float = 0.0
    eval_every: int = 1
    seed: int = 0
    num_workers: int = 0
    persistent_workers: bool = True
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    deterministic: bool | None = None
    max_batches_per_epoch: int | None = None
    val_batch_size: int | None = None
    checkpoint_every_steps: int | None = None
    resume: bool = True
    param_path: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.param_path or "train"
        for name in ("epochs", "batch_size", "eval_every", "plateau_patience"):
            _require_int(where, name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed", "num_workers"):
            _require_int(where, name, getattr(self, name), minimum=0)
        for name in (
            "patience",
            "max_batches_per_epoch",
            "val_batch_size",
            "checkpoint_every_steps",
        ):
            if getattr(self, name) is not None:
                _require_int(where, name, getattr(self, name), minimum=1)
        _require_real(where, "lr", self.lr, positive=True)
        for name in ("weight_decay", "min_delta", "min_lr"):
            _require_real(where, name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            _require_real(where, "grad_clip", self.grad_clip, positive=True)
        _require_real(where, "plateau_factor", self.plateau_factor, positive=True)
        if not self.plateau_factor < 1:
            raise ConfigError(
                f"{where}.plateau_factor must be in (0, 1), got {self.plateau_factor}"
            )
        if self.min_lr > self.lr:
            raise ConfigError(f"{where}.min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"{where}.schedule must be null, 'cosine' or 'plateau', got {self.schedule!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"{where}.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("persistent_workers", "channels_last", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{where}.{name} must be true or false, got {getattr(self, name)!r}"
                )
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise ConfigError(
                f"{where}.deterministic must be true, false or null, got {self.deterministic!r}"
            )
        try:
            resolve_device(self.device, check_available=False)
        except ConfigError as err:
            raise ConfigError(f"{where}.device: {err}") from None

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None, prefix: str = "train") -> TrainConfig:
        """Build from a parameters mapping; an unknown key is a ``ConfigError`` naming it."""
        return cls(**known_keys(cls, params, prefix), param_path=prefix)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the hyperparameters (what checkpoints and the tracker record)."""
        out = asdict(self)
        out.pop("param_path")
        return out


def stage_config(
    shared: Mapping[str, Any] | None, stage: Mapping[str, Any] | None, param_path: str
) -> TrainConfig:
    """The engine's config of one stage: the shared ``training:`` block (conf/base/parameters.yml)
    with the stage's own block (``param_path``, e.g. ``teacher.training``) over it; an unknown
    key is named under the block that holds it."""
    TrainConfig.from_dict(shared, prefix="training")
    TrainConfig.from_dict(stage, prefix=param_path)
    return TrainConfig.from_dict({**(shared or {}), **(stage or {})}, prefix=param_path)


def _require_int(where: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")


def _require_real(where: str, name: str, value: Any, *, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{where}.{name} must be a finite number {bound}, got {value!r}")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
