"""The training configuration: ``TrainConfig`` (the ``train`` block of the parameters, read by
``config_utils.from_params`` from its fields' types and bounds), the allowed schedules and
precisions, the keys a resumed run may change, and ``autocast_dtype`` (what a ``precision``
means on a device)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from sdkd_pipeline import config_utils
from sdkd_pipeline.config_utils import check_fields, param
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

    epochs: int = param(10, ge=1)
    batch_size: int = param(16, ge=1)
    lr: float = param(1e-4, gt=0)
    weight_decay: float = param(0.0, ge=0)
    schedule: str | None = param(None, choices=SCHEDULES)
    warmup_steps: int = param(0, ge=0)
    min_lr: float = param(0.0, ge=0)
    plateau_factor: float = param(0.5, gt=0, lt=1)
    plateau_patience: int = param(5, ge=1)
    grad_clip: float | None = param(None, gt=0)
    patience: int | None = param(10, ge=1)
    min_delta: float = param(0.0, ge=0)
    eval_every: int = param(1, ge=1)
    seed: int = param(0, ge=0)
    num_workers: int = param(0, ge=0)
    persistent_workers: bool = True
    device: str = "auto"
    precision: str = param("auto", choices=PRECISIONS)
    channels_last: bool = False
    deterministic: bool | None = None
    max_batches_per_epoch: int | None = param(None, ge=1)
    val_batch_size: int | None = param(None, ge=1)
    checkpoint_every_steps: int | None = param(None, ge=1)
    resume: bool = True
    # where the config was read from (errors name its keys under it); not a hyperparameter
    param_path: str | None = field(
        default=None, compare=False, repr=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        # every field against its type and bounds (also when built in code), then the rules
        # that involve several fields or the device's spelling
        where = self.param_path or "train"
        check_fields(self, where)
        if self.min_lr > self.lr:
            raise ConfigError(f"{where}.min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        try:
            resolve_device(self.device, check_available=False)
        except ConfigError as err:
            raise ConfigError(f"{where}.device: {err}") from None

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = "train"
    ) -> TrainConfig:
        """Build from the parameters mapping at ``param_path``; an unknown key or a bad value
        is a ``ConfigError`` naming ``<param_path>.<key>``."""
        return config_utils.from_params(cls, params, param_path)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None, prefix: str = "train") -> TrainConfig:
        """The old spelling of ``from_params`` (``prefix`` is its ``param_path``)."""
        return cls.from_params(params, prefix)

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
    TrainConfig.from_params(shared, "training")
    TrainConfig.from_params(stage, param_path)
    return TrainConfig.from_params({**(shared or {}), **(stage or {})}, param_path)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
