"""Radial energy spectra of 2-D fields for analysis, and statistics of a spectrum: power-law and
exponential fits, the adaptive cutoff, the spectral centroid and the high-band fraction.

Fields, precision, the rfft half-plane and ``|k|`` follow the conventions in ``grid``.

- Radial spectra bin modes into shells ``round(|k|)`` = 0, 1, ..., ``round(max |k|)`` (so no
  mode is dropped and the shells sum to the total energy; shells above ``min(H, W) / 2`` on a
  square grid are the incomplete corners). Shell k holds modes with ``k - 0.5 <= |k| < k + 0.5``:
  to put shells ``0..k_c`` in the low band of a ``BandSplit``, use the cutoff ``k_c + 0.5``.
- Non-periodic directions (RBC walls, latitude) leak energy to high k through the jump at the
  boundary; ``detrend_and_window`` removes the linear trend and applies a Hann window first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.grid import _power, _radial_wavenumber_f64, _rfft_weights_f64, _upcast

__all__ = [
    "ExponentialFit",
    "PowerLawFit",
    "detrend_and_window",
    "energy_fraction_cutoff",
    "fit_exponential",
    "fit_power_law",
    "high_band_fraction",
    "radial_energy_spectrum",
    "spectral_centroid",
]


# ---------------------------------------------------------------------------------------------
# Radial spectra
# ---------------------------------------------------------------------------------------------


def _as_tensor_f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return _upcast(x.detach()).double()
    array = np.asarray(x)
    if np.iscomplexobj(array):
        raise TypeError(f"expected a real field, got a {array.dtype} array")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))


def _normalize_dims(dims: Sequence[int], ndim: int, what: str) -> tuple[int, ...]:
    normalized = []
    for dim in dims:
        if not -ndim <= dim < ndim:
            raise ValueError(f"{what} {dim} out of range for a {ndim}-d input")
        normalized.append(dim % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{what} {tuple(dims)} repeat a dim")
    return tuple(normalized)


def radial_energy_spectrum(
    x,
    *,
    spatial_dims: tuple[int, int] = (-2, -1),
    reduce_dims: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Radially binned energy spectrum ``E(k)`` of 2-D fields (tensor or array, any device).

    ``E[k]`` is ``sum w |X|^2`` over the modes with ``round(|k|) == k`` (shells 0 ..
    ``round(max |k|)``), averaged over ``reduce_dims`` (default: every non-spatial dim, i.e.
    samples, time and channels). So ``E.sum()`` is the mean total energy ``mean(sum x^2)`` of
    one field. Computed in float64 without gradient.

    Returns ``(k, E)`` as float64 numpy arrays: ``k`` ``(K,)`` the shell wavenumbers and ``E``
    ``(*kept_dims, K)``, where ``kept_dims`` are the non-spatial dims not in ``reduce_dims`` in
    their order (none by default, so ``E`` is ``(K,)``).
    """
    field = _as_tensor_f64(x)
    ndim = field.dim()
    if ndim < 2:
        raise ValueError(
            f"radial_energy_spectrum needs a 2-D field, got shape {tuple(field.shape)}"
        )
    spatial = _normalize_dims(spatial_dims, ndim, "spatial_dims")
    if len(spatial) != 2:
        raise ValueError(f"spatial_dims must name two dims, got {spatial_dims!r}")
    others = [d for d in range(ndim) if d not in spatial]
    if reduce_dims is None:
        reduce = tuple(others)
    else:
        reduce = _normalize_dims(reduce_dims, ndim, "reduce_dims")
        if set(reduce) & set(spatial):
            raise ValueError(
                f"reduce_dims {tuple(reduce_dims)} overlap spatial_dims {spatial_dims}"
            )
    kept = [d for d in others if d not in reduce]

    # Order (kept..., reduced..., H, W) so the reduction is over a contiguous block.
    field = field.permute(*kept, *reduce, *spatial)
    height, width = field.shape[-2:]
    with torch.no_grad():
        power = _power(torch.fft.rfft2(field, norm="ortho"))
        power = power * _rfft_weights_f64(width).to(power.device)
        if reduce:
            power = power.mean(dim=tuple(range(len(kept), len(kept) + len(reduce))))
        shells = torch.floor(_radial_wavenumber_f64(height, width) + 0.5).long()
        n_shells = int(shells.max()) + 1
        energy = power.new_zeros((*power.shape[:-2], n_shells))
        energy.index_add_(-1, shells.flatten().to(power.device), power.flatten(-2))
    return np.arange(n_shells, dtype=np.float64), energy.cpu().numpy()


def detrend_and_window(x, dims: Sequence[int], *, rescale: bool = True):
    """Remove the least-squares linear trend along each of ``dims`` and apply a Hann window.

    For non-periodic directions (RBC walls, latitude), whose jump at the boundary would
    otherwise leak energy into every wavenumber. The window is the periodic (DFT-even) Hann;
    with ``rescale`` it is divided by ``sqrt(mean(w^2))`` so a stationary field keeps its total
    energy on average. Takes a tensor (returns float32 / float64) or an array (returns float64).
    """
    is_numpy = not isinstance(x, torch.Tensor)
    field = _as_tensor_f64(x) if is_numpy else _upcast(x)
    for dim in _normalize_dims(dims, field.dim(), "dims"):
        n = field.shape[dim]
        if n < 2:
            raise ValueError(f"cannot detrend dim {dim} of length {n}")
        shape = [1] * field.dim()
        shape[dim] = n
        # Centered coordinate, so offset and slope decouple in the least-squares fit.
        t = torch.linspace(-1.0, 1.0, n, dtype=field.dtype, device=field.device).reshape(shape)
        offset = field.mean(dim, keepdim=True)
        slope = (field * t).sum(dim, keepdim=True) / (t * t).sum()
        window = torch.hann_window(n, periodic=True, dtype=field.dtype, device=field.device)
        if rescale:
            window = window / window.pow(2).mean().sqrt()
        field = (field - offset - slope * t) * window.reshape(shape)
    return field.numpy() if is_numpy else field


# ---------------------------------------------------------------------------------------------
# Spectrum statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerLawFit:
    """Least-squares fit ``log E = intercept + slope * log k`` (natural logs) over a k range.

    ``k_min`` and ``k_max`` are the requested range; ``n_points`` the shells used in it.
    """

    slope: float
    slope_stderr: float
    intercept: float
    r2: float
    k_min: float
    k_max: float
    n_points: int

    def predict(self, k) -> np.ndarray:
        """The fitted line ``exp(intercept) * k ** slope`` (for plotting next to the data)."""
        return np.exp(self.intercept) * np.asarray(k, dtype=np.float64) ** self.slope


def _spectrum_arrays(k, E) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=np.float64).ravel()
    E = np.asarray(E, dtype=np.float64).ravel()
    if k.shape != E.shape:
        raise ValueError(f"k and E must have the same length, got {k.size} and {E.size}")
    return k, E


@dataclass(frozen=True)
class ExponentialFit:
    """Least-squares fit ``log E = intercept + rate * k`` (natural log) over a k range: the
    exponential ``E ~ exp(rate * k)``, to set beside ``PowerLawFit`` over the same shells (a
    laminar flow's spectrum decays exponentially, not as a power law)."""

    rate: float
    rate_stderr: float
    intercept: float
    r2: float
    k_min: float
    k_max: float
    n_points: int

    def predict(self, k) -> np.ndarray:
        """The fitted curve ``exp(intercept + rate * k)``."""
        return np.exp(self.intercept + self.rate * np.asarray(k, dtype=np.float64))


def _fit_points(k, E, k_min: float, k_max: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The shells ``k_min <= k <= k_max`` with ``k > 0`` and finite ``E > 0`` (at least 3)."""
    k, E = _spectrum_arrays(k, E)
    if not k_min <= k_max:
        raise ValueError(f"fit range k_min={k_min:g} > k_max={k_max:g}")
    use = (k >= k_min) & (k <= k_max) & (k > 0) & np.isfinite(E) & (E > 0)
    n = int(use.sum())
    if n < 3:
        raise ValueError(
            f"a {what} fit over {k_min:g} <= k <= {k_max:g} needs at least 3 points with "
            f"k > 0 and E > 0, got {n}"
        )
    if np.ptp(k[use]) == 0.0:
        raise ValueError(f"all {n} points in {k_min:g} <= k <= {k_max:g} have the same k")
    return k[use], E[use]


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least squares ``y = intercept + slope * x``: (slope, its standard error with ``n - 2``
    degrees of freedom, intercept, r^2)."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    slope = float(dx @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    residuals = y - (intercept + slope * x)
    ss_res = float(residuals @ residuals)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    stderr = math.sqrt(ss_res / (x.size - 2) / sxx)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return slope, stderr, intercept, r2


def fit_power_law(k, E, k_min: float, k_max: float) -> PowerLawFit:
    """Fit ``E ~ k^slope`` by least squares of ``log E`` on ``log k`` over ``k_min <= k <= k_max``.

    Only points with ``k > 0`` and finite ``E > 0`` are used; at least 3 are needed. The slope's
    standard error comes from the residual variance with ``n - 2`` degrees of freedom.
    """
    k, E = _fit_points(k, E, k_min, k_max, "power-law")
    slope, stderr, intercept, r2 = _line_fit(np.log(k), np.log(E))
    return PowerLawFit(
        slope=slope,
        slope_stderr=stderr,
        intercept=intercept,
        r2=r2,
        k_min=float(k_min),
        k_max=float(k_max),
        n_points=int(k.size),
    )


def fit_exponential(k, E, k_min: float, k_max: float) -> ExponentialFit:
    """Fit ``E ~ exp(rate * k)`` by least squares of ``log E`` on ``k`` over the same points as
    ``fit_power_law`` (so the two r^2 compare like for like)."""
    k, E = _fit_points(k, E, k_min, k_max, "exponential")
    rate, stderr, intercept, r2 = _line_fit(k, np.log(E))
    return ExponentialFit(
        rate=rate,
        rate_stderr=stderr,
        intercept=intercept,
        r2=r2,
        k_min=float(k_min),
        k_max=float(k_max),
        n_points=int(k.size),
    )


def energy_fraction_cutoff(k, E, fraction: float, *, include_mean: bool = True) -> float:
    """Smallest shell ``k >= 1`` whose cumulative energy (shells 0..k) is ``>= fraction * total``.

    The adaptive cutoff: placed on the teacher's predicted spectrum it replaces a fixed k_c.
    With ``include_mean=False`` shell 0 is left out of both sums (useful when fields are not
    centred, so the mean does not decide the cutoff). A returned shell ``k_c`` corresponds to
    ``BandSplit.two_band(H, W, k_c + 0.5)`` (clip it below the grid's ``k_max``).
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    k, E = _spectrum_arrays(k, E)
    order = np.argsort(k, kind="stable")
    k, E = k[order], E[order]
    if not include_mean:
        k, E = k[k > 0], E[k > 0]
    total = float(E.sum())
    if not total > 0:
        raise ValueError(f"the spectrum has no energy (total {total:g})")
    cumulative = np.cumsum(E)
    # A relative slack of 1e-12 so that an exact split (e.g. half the energy) is not missed by
    # rounding in the cumulative sum.
    reached = (cumulative >= fraction * total - 1e-12 * total) & (k >= 1)
    if not reached.any():
        raise ValueError("the spectrum has no shell with k >= 1")
    return float(k[np.argmax(reached)])


def spectral_centroid(k, E) -> float:
    """Energy-weighted mean wavenumber ``sum k E / sum E`` over ``k > 0``.

    The mean (k = 0) is left out: it is not a scale, and would pull every centroid to zero.
    """
    k, E = _spectrum_arrays(k, E)
    use = k > 0
    total = float(E[use].sum())
    if not total > 0:
        raise ValueError("the spectrum has no energy at k > 0")
    return float((k[use] * E[use]).sum() / total)


def high_band_fraction(k, E, cutoff: float) -> float:
    """Share of the energy at ``k > cutoff`` among all ``k > 0`` (the mean, k = 0, is left out
    of both, as in ``spectral_centroid``)."""
    k, E = _spectrum_arrays(k, E)
    use = k > 0
    total = float(E[use].sum())
    if not total > 0:
        raise ValueError("the spectrum has no energy at k > 0")
    return float(E[use & (k > cutoff)].sum() / total)
