"""The wavenumber grid of 2-D fields and the FFT helpers shared by ``bands`` and ``spectra``.

Imports only torch and numpy, so training losses, analysis and evaluation can all use the
``spectral`` package without Kedro, MLflow, Zarr or Dask.

Conventions (of the whole ``spectral`` package)
-----------------------------------------------
- Fields have shape ``(..., H, W)``; every leading dim (batch, time, channel) is a separate
  field. Spectra are ``torch.fft.rfft2(x, norm="ortho")`` so Parseval holds exactly:
  ``sum |x|^2 == sum over the full spectrum |X|^2``.
- Precision: inputs in float16 / bfloat16 (or integers) are upcast to float32 before the FFT,
  float64 stays float64; autocast is switched off inside, so results are float32 (float64)
  also under ``torch.autocast`` (half-precision FFTs are inexact, and on CUDA limited to
  power-of-two sizes).
- rfft half-plane: each column ``kx`` in ``1 .. (W-1)//2`` stands for itself and its conjugate
  mode ``-kx``, so energies weight columns by 2; column 0 and, for even W, the Nyquist column
  ``W/2`` are their own conjugates and weigh 1 (``rfft_weights``).
- Radial wavenumber ``|k| = sqrt(ky^2 + kx^2)`` in cycles per ``L = max(H, W)`` grid cells with
  ``ky = fftfreq(H) * L`` and ``kx = rfftfreq(W) * L``; this assumes equal grid spacing along
  both axes (true for NS, RBC, lat/lon grids and TaxiBJ). On square grids these are the
  integer wavenumbers; on a 32x128 grid one cycle over the 32 rows is ``|k| = 4``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError

__all__ = ["radial_wavenumber", "rfft_weights"]


# ---------------------------------------------------------------------------------------------
# Grid quantities
# ---------------------------------------------------------------------------------------------


def _check_grid(height: int, width: int) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"grid {name} must be a positive integer, got {value!r}")
    return int(height), int(width)


def _radial_wavenumber_f64(height: int, width: int) -> torch.Tensor:
    """|k| on the rfft half-plane in float64 on the CPU (masks and shells are built from this,
    so float32 rounding cannot move a mode across a cutoff)."""
    length = max(height, width)
    ky = torch.fft.fftfreq(height, dtype=torch.float64) * length
    kx = torch.fft.rfftfreq(width, dtype=torch.float64) * length
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def radial_wavenumber(
    height: int, width: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Radial wavenumber ``|k|`` of each rfft2 coefficient, shape ``(H, W//2+1)``, float32.

    In cycles per ``max(H, W)`` grid cells (see the module docstring).
    """
    height, width = _check_grid(height, width)
    return _radial_wavenumber_f64(height, width).to(device=device, dtype=torch.float32)


def _rfft_weights_f64(width: int) -> torch.Tensor:
    weights = torch.full((width // 2 + 1,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0  # the Nyquist column is its own conjugate
    return weights


def rfft_weights(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Column weights ``(W//2+1,)`` float32 for energies on the rfft half-plane.

    1 for column 0 and for the Nyquist column when W is even, 2 for the others, which stand for
    two conjugate modes. ``height`` does not change them; it is taken for symmetry with
    ``radial_wavenumber``.
    """
    _, width = _check_grid(height, width)
    return _rfft_weights_f64(width).to(device=device, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# FFT helpers
# ---------------------------------------------------------------------------------------------


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; everything else real becomes float32 (half FFTs are inexact)."""
    if x.is_complex():
        raise TypeError(f"expected a real field, got a {x.dtype} tensor")
    return x if x.dtype == torch.float64 else x.float()


def _autocast_off(device: torch.device):
    """Disable autocast here: it would run the band sums (a matmul) in bf16/fp16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _power(spectrum: torch.Tensor) -> torch.Tensor:
    """|X|^2 without abs(), whose gradient is undefined at X = 0."""
    return torch.view_as_real(spectrum).pow(2).sum(-1)
