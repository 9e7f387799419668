"""Checks of what ``metrics.MetricAccumulator`` is given (tensors, sizes, SSIM convention,
data range), each raising an error that says what is wrong."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    tensor = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if tensor.is_complex():
        raise TypeError(f"{what} must be a real field, got a {tensor.dtype} tensor")
    return tensor


def _check_finite(x: torch.Tensor, what: str, hint: str) -> None:
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{what} contains {bad} NaN/Inf value(s) out of {x.numel()}: {hint}; "
            "no metrics are computed from it"
        )


def _autocast_off(device: torch.device):
    """SSIM's convolution and the FFT must not run in bf16/fp16 under a caller's autocast."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_data_range(data_range: Sequence[float] | torch.Tensor, channels: int) -> torch.Tensor:
    values = torch.as_tensor(
        data_range.detach().cpu() if isinstance(data_range, torch.Tensor) else data_range,
        dtype=torch.float64,
    ).flatten()
    if values.numel() != channels:
        raise ValueError(
            f"data_range needs one value per channel ({channels}), got {values.numel()}: "
            f"{values.tolist()}"
        )
    for channel, value in enumerate(values.tolist()):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"data_range of channel {channel} must be a positive finite number, got {value!r}"
            )
    return values
