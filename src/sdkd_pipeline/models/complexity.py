"""Parameter counts and forward FLOPs measured on the model itself (no tables).

FLOPs are torch's ``FlopCounterMode`` counts (matmuls, convolutions, attention) plus the FFTs,
which it does not count: an FFT over ``N`` points (the product of the transformed dims) costs
``5 N log2 N`` real FLOPs complex-to-complex and ``2.5 N log2 N`` real-to-complex or
complex-to-real (the usual radix-2 count, as FFTW's benchmarks report), for each of the
transformed signals (the input's other dims).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def fft_flops(shape: Sequence[int], dims: Sequence[int], *, real: bool) -> int:
    """Real FLOPs of FFTs over ``dims`` of a ``shape`` array (the complex side's shape for a
    complex-to-real one is its real output's): ``(5 or 2.5) N log2 N`` per transformed signal,
    2.5 when ``real`` (real-to-complex or complex-to-real)."""
    n = math.prod(int(shape[d]) for d in dims)
    signals = math.prod(int(s) for s in shape) // max(n, 1)
    per_point = 2.5 if real else 5.0
    return int(round(per_point * n * math.log2(n) * signals)) if n > 1 else 0


def _r2c_flops(input_shape, dim, normalization, onesided, out_shape=None, **_: Any) -> int:
    return fft_flops(input_shape, dim, real=True)


def _c2r_flops(input_shape, dim, normalization, last_dim_size, out_shape=None, **_: Any) -> int:
    return fft_flops(out_shape, dim, real=True)


def _c2c_flops(input_shape, dim, normalization, forward, out_shape=None, **_: Any) -> int:
    return fft_flops(input_shape, dim, real=False)


FFT_FLOPS = {
    aten._fft_r2c: _r2c_flops,
    aten._fft_c2r: _c2r_flops,
    aten._fft_c2c: _c2c_flops,
}


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
    case the count is divided by B. Covers matmuls, convolutions, attention and FFTs (see the
    module docstring); element-wise ops (norms, activations) are not counted, as is usual.
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
        counter = FlopCounterMode(display=False, custom_mapping=FFT_FLOPS)
        with torch.no_grad(), counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // shape[0]
