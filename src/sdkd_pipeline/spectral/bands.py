"""Wavenumber bands for frequency-aligned distillation: ``BandSplit``.

Fields, precision, the rfft half-plane and ``|k|`` follow the conventions in ``grid``.

- Bands (``BandSplit``) are closed above: band 0 is ``|k| <= c_0`` and holds the mean (k = 0),
  band b is ``c_{b-1} < |k| <= c_b``, the last band is ``|k| > c_last``. A mode within a relative
  1e-9 of a cutoff counts as on it, so cutoffs computed in floating point (``log_spaced``) do
  not flip modes sitting exactly on them. The masks are symmetric under ``k -> -k``, so every
  band-filtered field is real and the band energies add up to the total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.grid import (
    _autocast_off,
    _check_grid,
    _power,
    _radial_wavenumber_f64,
    _rfft_weights_f64,
    _upcast,
)

__all__ = ["BandSplit"]

# Modes this close (relative) to a cutoff count as on it; see the module docstring.
_CUTOFF_RTOL = 1e-9


# ---------------------------------------------------------------------------------------------
# Bands
# ---------------------------------------------------------------------------------------------


class BandSplit:
    """Complementary radial wavenumber bands of an ``H x W`` grid (see the module docstring).

    ``BandSplit(height, width, cutoffs)`` with strictly increasing positive cutoffs gives
    ``len(cutoffs) + 1`` bands; every band must hold at least one mode, so a cutoff at or above
    the largest ``|k|`` of the grid is refused. All methods take fields ``(..., H, W)`` on any
    device (constants are cached per device and dtype) and are differentiable.
    """

    def __init__(self, height: int, width: int, cutoffs: Sequence[float]) -> None:
        self.height, self.width = _check_grid(height, width)
        self.cutoffs: tuple[float, ...] = self._check_cutoffs(cutoffs)
        self.n_bands = len(self.cutoffs) + 1

        kmag = _radial_wavenumber_f64(self.height, self.width)
        self.k_max = float(kmag.max())
        band_index = torch.zeros(kmag.shape, dtype=torch.long)
        for cutoff in self.cutoffs:
            band_index += (kmag > cutoff * (1.0 + _CUTOFF_RTOL)).long()
        masks = band_index[None] == torch.arange(self.n_bands)[:, None, None]
        self._check_bands_nonempty(masks)

        self.device = torch.device("cpu")
        self._masks = {self.device: masks}
        # (n_bands, H * (W//2+1)) masks times rfft column weights, per (device, dtype).
        weighted = (masks.double() * _rfft_weights_f64(self.width)).flatten(1)
        self._weighted = {(self.device, torch.float64): weighted}

    # -- construction ------------------------------------------------------------------------

    def _check_cutoffs(self, cutoffs: Sequence[float]) -> tuple[float, ...]:
        try:
            values = tuple(float(c) for c in cutoffs)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"band cutoffs must be a list of numbers, got {cutoffs!r}") from error
        if not values:
            raise ConfigError("band cutoffs must name at least one cutoff (two bands), got none")
        k_max = float(_radial_wavenumber_f64(self.height, self.width).max())
        grid = f"{self.height}x{self.width}"
        for value in values:
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"band cutoff {value:g} must be a positive finite wavenumber")
            if value >= k_max:
                raise ConfigError(
                    f"band cutoff {value:g} is at or above the largest wavenumber {k_max:.4g} "
                    f"of a {grid} grid, which would leave the highest band empty"
                )
        for low, high in zip(values, values[1:], strict=False):
            if high <= low:
                raise ConfigError(
                    f"band cutoffs must be strictly increasing, got {low:g} then {high:g} "
                    f"in {list(values)}"
                )
        return values

    def _check_bands_nonempty(self, masks: torch.Tensor) -> None:
        for band, mask in enumerate(masks):
            if not bool(mask.any()):
                if band == self.n_bands - 1:  # a cutoff within rounding of the largest |k|
                    raise ConfigError(
                        f"band cutoff {self.cutoffs[-1]:g} leaves the highest band empty: no "
                        f"wavenumber of a {self.height}x{self.width} grid lies above it"
                    )
                low, high = self.cutoffs[band - 1], self.cutoffs[band]
                raise ConfigError(
                    f"band cutoffs {low:g} and {high:g} leave band {band} empty: no wavenumber "
                    f"of a {self.height}x{self.width} grid lies in ({low:g}, {high:g}]"
                )

    @classmethod
    def two_band(cls, height: int, width: int, cutoff: float) -> BandSplit:
        """Low band ``|k| <= cutoff`` and high band ``|k| > cutoff`` (the paper's Psi_l, Psi_h)."""
        return cls(height, width, [cutoff])

    @classmethod
    def log_spaced(cls, height: int, width: int, n_bands: int = 3) -> BandSplit:
        """``n_bands`` bands with edges log-spaced from ``|k| = 1`` to the grid's largest ``|k|``.

        Like The Well's ``binned_spectral_mse`` (three log-spaced bins: low / mid / high), except
        that the mean (k = 0) belongs to band 0 here, so the bands sum to the full MSE.
        """
        if isinstance(n_bands, bool) or not isinstance(n_bands, (int, np.integer)) or n_bands < 2:
            raise ConfigError(f"n_bands must be an integer >= 2, got {n_bands!r}")
        height, width = _check_grid(height, width)
        k_max = float(_radial_wavenumber_f64(height, width).max())
        if k_max <= 1.0:
            raise ConfigError(
                f"a {height}x{width} grid has no wavenumber above 1 to log-space bands over"
            )
        edges = np.geomspace(1.0, k_max, int(n_bands) + 1)
        return cls(height, width, edges[1:-1].tolist())

    def __repr__(self) -> str:
        cutoffs = ", ".join(f"{c:.4g}" for c in self.cutoffs)
        return f"BandSplit({self.height}x{self.width}, cutoffs=[{cutoffs}], k_max={self.k_max:.4g})"

    # -- devices -----------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> BandSplit:
        """Cache the constants on ``device`` and make it the device of ``masks``; returns self."""
        # Resolve "cuda" to "cuda:0" so it matches the device of tensors (the cache key).
        self.device = torch.empty(0, device=device).device
        self._masks_on(self.device)
        self._weighted_on(self.device, torch.float32)
        return self

    def _masks_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._masks:
            self._masks[device] = self._masks[torch.device("cpu")].to(device)
        return self._masks[device]

    def _weighted_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._weighted:
            reference = self._weighted[(torch.device("cpu"), torch.float64)]
            self._weighted[key] = reference.to(device=device, dtype=dtype)
        return self._weighted[key]

    @property
    def masks(self) -> torch.Tensor:
        """Bool ``(n_bands, H, W//2+1)`` on ``self.device``; every mode in exactly one band."""
        return self._masks_on(self.device)

    # -- operations --------------------------------------------------------------------------

    def _check_field(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"expected a field (..., {self.height}, {self.width}) for this BandSplit, "
                f"got shape {tuple(x.shape)}"
            )

    def _check_band(self, band: int) -> int:
        if not -self.n_bands <= band < self.n_bands:
            raise ValueError(f"band {band} out of range for {self.n_bands} bands")
        return band % self.n_bands

    def band_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``sum_{k in band} w_k |X_k|^2`` of each field: ``(..., n_bands)``.

        The bands sum to ``(x ** 2).sum((-2, -1))`` (Parseval). float32, or float64 for float64
        input.
        """
        self._check_field(x)
        with _autocast_off(x.device):
            x = _upcast(x)
            power = _power(torch.fft.rfft2(x, norm="ortho")).flatten(-2)
            return power @ self._weighted_on(x.device, x.dtype).T

    def band_mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Band split of the MSE: ``(n_bands,)`` that sums to ``F.mse_loss(a, b)``."""
        difference = self._difference(a, b)
        energy = self.band_energy(difference).reshape(-1, self.n_bands)
        return energy.sum(0) / difference.numel()

    def band_mse_per_sample(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Band split of each sample's MSE: ``(B, n_bands)``, reducing all dims but the first."""
        difference = self._difference(a, b)
        if difference.dim() < 3:
            raise ValueError(
                f"band_mse_per_sample needs (B, ..., H, W) inputs, got shape {tuple(a.shape)}"
            )
        energy = self.band_energy(difference).reshape(len(difference), -1, self.n_bands).sum(1)
        return energy / difference[0].numel()

    def _difference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(
                f"band MSE needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        # Subtract after upcasting: bf16 model outputs would lose the small differences.
        with _autocast_off(a.device):
            return _upcast(a) - _upcast(b)

    def filter(self, x: torch.Tensor, band: int) -> torch.Tensor:
        """The part of ``x`` in one band, same shape (float32, or float64 for float64 input).

        ``sum(self.filter(x, b) for b in range(n_bands)) == x`` to float precision.
        """
        self._check_field(x)
        band = self._check_band(band)
        with _autocast_off(x.device):
            spectrum = torch.fft.rfft2(_upcast(x), norm="ortho")
            masked = spectrum * self._masks_on(x.device)[band]
            return torch.fft.irfft2(masked, s=(self.height, self.width), norm="ortho")

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All band-limited parts of ``x`` (one forward FFT), low band first; they sum to x."""
        self._check_field(x)
        with _autocast_off(x.device):
            spectrum = torch.fft.rfft2(_upcast(x), norm="ortho")
            masks = self._masks_on(x.device)
            return [
                torch.fft.irfft2(spectrum * mask, s=(self.height, self.width), norm="ortho")
                for mask in masks
            ]
