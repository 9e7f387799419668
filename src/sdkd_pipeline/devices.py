"""The one place a device name becomes a ``torch.device``: the training engine, the solvers,
the spectral and evaluation stages and the CLIs all resolve ``device`` settings here, so
``auto`` and a missing GPU mean the same everywhere."""

from __future__ import annotations

import torch

from sdkd_pipeline.errors import ConfigError


def resolve_device(
    device: str | torch.device = "auto", *, check_available: bool = True, param: str | None = None
) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked and returned.
    ``param`` (e.g. ``teacher.training.device``) starts the error message, so the user knows
    which setting to change."""
    where = f"{param}: " if param else ""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"{where}unknown device {device!r}; use auto, cpu, cuda or cuda:N"
        ) from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"{where}unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    if check_available and resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{where}device {device!r} requested but CUDA is not available on this machine; "
            "use auto (CUDA when present, else CPU) or cpu"
        )
    return resolved
