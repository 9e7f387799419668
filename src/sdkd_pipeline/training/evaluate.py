"""Validation and evaluation: the validation metric (``squared_error_sum``), the exact
metric over a loader (all-reduced under DDP), ``evaluate_mse``, and the batch helpers the
training loop shares (moving a batch to the device, autocast)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.training.config import autocast_dtype
from sdkd_pipeline.training.distributed import _Dist
from sdkd_pipeline.training.losses import _check_same_shape

ValMetric = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]


def squared_error_sum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """The default validation metric's parts: (sum of squared errors, number of values)."""
    prediction = model(x)
    _check_same_shape(prediction, y)
    return (prediction.float() - y.float()).square().sum(dtype=torch.float64), y.numel()


def _to_device(batch: Any, device: torch.device) -> tuple[torch.Tensor, Any]:
    # the target may be a nested mapping (distillation attaches cached teacher outputs)
    x, y = batch
    return x.to(device, non_blocking=True), _move(y, device)


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_move(v, device) for v in obj)
    return obj


@torch.no_grad()
def _metric_over(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    dtype: torch.dtype | None,
    metric: ValMetric,
    dist_ctx: _Dist,
) -> float:
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for batch in loader:
            x, y = _to_device(batch, device)
            with _autocast(device, dtype):
                value, count = metric(model, x, y)
            totals[0] += value.detach().to(torch.float64)
            totals[1] += count
    finally:
        model.train(was_training)
    totals = dist_ctx.all_sum(totals)
    if totals[1].item() == 0:
        raise ConfigError("evaluation set is empty")
    return float(totals[0] / totals[1])


def evaluate_mse(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    *,
    precision: str = "fp32",
    num_workers: int = 0,
) -> float:
    """Plain per-value MSE of ``model(x)`` against ``y`` over ``dataset`` (normalized units).

    Summed exactly over all values (not an average of batch means), so the last partial batch
    weighs what it holds.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError("evaluate_mse: the dataset is empty")
    resolved = resolve_device(device)
    model = model.to(resolved)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=resolved.type == "cuda",
    )
    return _metric_over(
        model, loader, resolved, autocast_dtype(precision, resolved), squared_error_sum, _Dist()
    )


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
