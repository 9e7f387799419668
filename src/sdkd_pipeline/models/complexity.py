"""Parameter counts and forward FLOPs measured on the model itself (no tables)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs per sample (a multiply-add counts as 2), counted by FlopCounterMode.

    ``input_shape`` is one sample's (T_in, C, H, W) or a batch's (B, T_in, C, H, W), in which
    case the count is divided by B. Covers matmuls, convolutions and attention; element-wise
    ops (norms, activations) are not counted, as is usual.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = (1, *shape)
    if len(shape) != 5:
        raise ValueError(f"input_shape must be (T, C, H, W) or (B, T, C, H, W), got {shape}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // shape[0]
