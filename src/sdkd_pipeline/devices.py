"""The one place a device name becomes a ``torch.device``: the training engine, the solvers,
the spectral and evaluation stages and the CLIs all resolve ``device`` settings here, so
``auto`` and a missing GPU mean the same everywhere."""

from __future__ import annotations

import torch

from sdkd_pipeline.errors import ConfigError


def resolve_device(
    device: str | torch.device = "auto", *, check_available: bool = True
) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if check_available and resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available")
    return resolved
