"""Wavenumber bands for frequency-aligned distillation, and radial energy spectra for analysis.

Imports only torch and numpy, so training losses, analysis and evaluation can all use it without
Kedro, MLflow, Zarr or Dask.

Conventions
-----------
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
- Bands (``BandSplit``) are closed above: band 0 is ``|k| <= c_0`` and holds the mean (k = 0),
  band b is ``c_{b-1} < |k| <= c_b``, the last band is ``|k| > c_last``. A mode within a relative
  1e-9 of a cutoff counts as on it, so cutoffs computed in floating point (``log_spaced``) do
  not flip modes sitting exactly on them. The masks are symmetric under ``k -> -k``, so every
  band-filtered field is real and the band energies add up to the total.
- Radial spectra bin modes into shells ``round(|k|)`` = 0, 1, ..., ``round(max |k|)`` (so no
  mode is dropped and the shells sum to the total energy; shells above ``min(H, W) / 2`` on a
  square grid are the incomplete corners). Shell k holds modes with ``k - 0.5 <= |k| < k + 0.5``:
  to put shells ``0..k_c`` in the low band of a ``BandSplit``, use the cutoff ``k_c + 0.5``.
- Non-periodic directions (RBC walls, latitude) leak energy to high k through the jump at the
  boundary; ``detrend_and_window`` removes the linear trend and applies a Hann window first.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError

__all__ = [
    "BandSplit",
    "ExponentialFit",
    "PowerLawFit",
    "detrend_and_window",
    "energy_fraction_cutoff",
    "fit_exponential",
    "fit_power_law",
    "high_band_fraction",
    "radial_energy_spectrum",
    "radial_wavenumber",
    "rfft_weights",
    "spectral_centroid",
]

# Modes this close (relative) to a cutoff count as on it; see the module docstring.
_CUTOFF_RTOL = 1e-9


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
    return PowerLawFit(slope=slope, slope_stderr=stderr, intercept=intercept, r2=r2,
                       k_min=float(k_min), k_max=float(k_max), n_points=int(k.size))


def fit_exponential(k, E, k_min: float, k_max: float) -> ExponentialFit:
    """Fit ``E ~ exp(rate * k)`` by least squares of ``log E`` on ``k`` over the same points as
    ``fit_power_law`` (so the two r^2 compare like for like)."""
    k, E = _fit_points(k, E, k_min, k_max, "exponential")
    rate, stderr, intercept, r2 = _line_fit(k, np.log(E))
    return ExponentialFit(rate=rate, rate_stderr=stderr, intercept=intercept, r2=r2,
                          k_min=float(k_min), k_max=float(k_max), n_points=int(k.size))


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
