"""Wavelet bands that vary in space: ``WaveletSplit``, an orthogonal split by scale and region.

The 2-D discrete wavelet transform (Mallat's pyramid) with an orthonormal Daubechies filter
(``haar`` = db1, ``db2``, ``db3``, ``db4``; computed here by spectral factorization, exact to
float64 rounding) and periodic boundaries: each level maps the current approximation
``(h, w)`` to ``R_h A R_w^T`` with ``R_n`` the ``n x n`` periodized analysis matrix (low-pass
rows, then high-pass rows), an orthogonal matrix for every even ``n``. So the whole transform
is orthogonal: the coefficients' energy is the field's energy, the inverse is the transpose,
and keeping any subset of coefficients and inverting is an orthogonal projection.

- **Bands** are wavelet levels, low band first like ``BandSplit``: band 0 is the
  approximation at the coarsest level J (it holds the mean), band b = 1..J the three detail
  sub-bands (LH, HL, HH) of level J - b + 1; the last band is level 1, the finest scale
  (2 grid cells). ``n_bands = levels + 1``.
- **Regions** are the ``tiles = (ty, tx)`` equal tiles of the grid, numbered row by row
  (``r = iy * tx + ix``). A coefficient of level j at (k, l) belongs to the tile that holds
  the first cell of its support, (k 2^j, l 2^j). With ``haar`` the support lies inside that
  tile, so a region's band energies sum to the field's energy in the tile; longer filters
  reach into the next tile (periodically), and a region's energies sum to its coefficients'
  energy. Either way the (region, band) cells partition the coefficients: their energies sum
  to the field's total and their reconstructions are mutually orthogonal and sum to the field.
- **The grid rule**: each level halves both axes and each tile must hold whole level-J blocks,
  so H must be a multiple of ``ty * 2^J`` and W of ``tx * 2^J``. ``levels=None`` takes the most
  the grid allows (``max_levels``); more levels, tiles that do not cut the grid evenly, or a
  grid that allows no level are a ``ConfigError`` that names the parameter
  (``<param_path>.levels`` or ``.tiles``) and the levels the grid allows.

Fields are ``(..., H, W)``, every leading dim a separate field; precision and autocast follow
``grid`` (float32, float64 for float64 input). The per-level matrices are dense (H^2 W + H W^2
multiply-adds per level), cached per device and dtype; every operation is differentiable and
runs on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from math import comb

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.grid import _autocast_off, _check_grid, _upcast

__all__ = ["WAVELETS", "WaveletSplit", "daubechies_filter", "max_levels"]

# name -> the number of vanishing moments p (filter length 2 p)
WAVELETS = {"haar": 1, "db2": 2, "db3": 3, "db4": 4}


@cache
def _daubechies(p: int) -> tuple[float, ...]:
    """The orthonormal Daubechies low-pass filter with ``p`` vanishing moments (length 2 p).

    Spectral factorization: |H(w)|^2 = 2 cos^2p(w/2) P(sin^2(w/2)) with
    P(y) = sum_k C(p-1+k, k) y^k; each root y of P gives z + 1/z = 2 - 4y, of which the root
    inside the unit circle is kept (the minimum-phase filter, as in Daubechies' tables).
    """
    roots_y = np.roots([comb(p - 1 + k, k) for k in range(p)][::-1]) if p > 1 else []
    poly = np.array([1.0 + 0j])
    for _ in range(p):
        poly = np.convolve(poly, [1.0, 1.0])
    for y in roots_y:
        pair = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
        poly = np.convolve(poly, [1.0, -pair[np.argmin(np.abs(pair))]])
    h = poly.real
    return tuple(float(v) for v in h * np.sqrt(2.0) / h.sum())


def daubechies_filter(wavelet: str) -> np.ndarray:
    """The low-pass analysis filter ``h`` of ``wavelet`` (float64): sum h = sqrt 2, orthonormal
    to its even shifts. The high-pass filter is ``g[m] = (-1)^m h[L-1-m]``."""
    if wavelet not in WAVELETS:
        raise ConfigError(f"wavelet must be one of {', '.join(WAVELETS)}, got {wavelet!r}")
    return np.array(_daubechies(WAVELETS[wavelet]))


def analysis_matrix(n: int, wavelet: str) -> np.ndarray:
    """The ``n x n`` one-level periodized analysis matrix (float64, orthogonal for even ``n``):
    row k < n/2 is the low-pass output k, ``sum_m h[m] x[(2k + m) mod n]``; row n/2 + k the
    high-pass one with g."""
    if n < 2 or n % 2:
        raise ValueError(f"a wavelet level needs an even length >= 2, got {n}")
    h = daubechies_filter(wavelet)
    length = len(h)
    g = np.array([(-1) ** m * h[length - 1 - m] for m in range(length)])
    matrix = np.zeros((n, n))
    half = n // 2
    for k in range(half):
        for m in range(length):
            matrix[k, (2 * k + m) % n] += h[m]
            matrix[half + k, (2 * k + m) % n] += g[m]
    return matrix


def _tiles(tiles: int | Sequence[int], where: str) -> tuple[int, int]:
    values = (tiles, tiles) if isinstance(tiles, (int, np.integer)) else tuple(tiles)
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values
    ):
        raise ConfigError(
            f"{where}.tiles must be a positive integer or a pair [rows, columns] of them, "
            f"got {tiles!r}"
        )
    return int(values[0]), int(values[1])


def max_levels(height: int, width: int, tiles: int | Sequence[int] = 1) -> int:
    """The most wavelet levels J an ``height x width`` grid in ``tiles`` allows: the largest J
    with H a multiple of ``ty * 2^J`` and W of ``tx * 2^J`` (0 when none, or when the tiles do
    not cut the grid evenly)."""
    height, width = _check_grid(height, width)
    ty, tx = _tiles(tiles, "wavelet split")
    if height % ty or width % tx:
        return 0
    levels, th, tw = 0, height // ty, width // tx
    while th % 2 == 0 and tw % 2 == 0:
        levels, th, tw = levels + 1, th // 2, tw // 2
    return levels


class WaveletSplit:
    """Orthogonal wavelet bands per region of an ``H x W`` grid (see the module docstring).

    ``WaveletSplit(height, width, levels=None, tiles=1, wavelet="haar")``; ``param_path``
    prefixes the names in its errors (e.g. ``distill.variants.sdkd_local.local``). The
    methods mirror ``BandSplit`` (``band_energy``, ``band_mse``, ``band_mse_per_sample``,
    ``filter``, ``split``, ``to``) and add the regions: ``region_band_energy``,
    ``region_band_mse``, ``filter(x, band, region)``, ``tile(region)``.
    """

    def __init__(
        self,
        height: int,
        width: int,
        levels: int | None = None,
        tiles: int | Sequence[int] = 1,
        wavelet: str = "haar",
        *,
        param_path: str = "wavelet split",
    ) -> None:
        self.height, self.width = _check_grid(height, width)
        self.tiles = _tiles(tiles, param_path)
        if wavelet not in WAVELETS:
            raise ConfigError(
                f"{param_path}.wavelet must be one of {', '.join(WAVELETS)}, got {wavelet!r}"
            )
        self.wavelet = wavelet
        self.levels = self._check_levels(levels, param_path)
        self.n_bands = self.levels + 1
        self.n_regions = self.tiles[0] * self.tiles[1]
        self.device = torch.device("cpu")
        # per level j (finest first): the row and column analysis matrices, float64 on the CPU
        self._reference = [
            (
                torch.from_numpy(analysis_matrix(self.height >> j, wavelet)),
                torch.from_numpy(analysis_matrix(self.width >> j, wavelet)),
            )
            for j in range(self.levels)
        ]
        self._matrices = {(self.device, torch.float64): self._reference}

    def _check_levels(self, levels: int | None, where: str) -> int:
        (ty, tx), grid = self.tiles, f"{self.height}x{self.width}"
        if self.height % ty or self.width % tx:
            raise ConfigError(
                f"{where}.tiles: {ty}x{tx} tiles do not cut a {grid} grid into equal tiles "
                f"(the height must be a multiple of {ty}, the width of {tx})"
            )
        allowed = max_levels(self.height, self.width, self.tiles)
        cells = f"{self.height // ty}x{self.width // tx}"
        if allowed == 0:
            raise ConfigError(
                f"{where}.tiles: a {grid} grid in {ty}x{tx} tiles of {cells} cells allows no "
                "wavelet level (each level halves a tile's sides, so both must be even); "
                "use fewer tiles"
            )
        if levels is None:
            return allowed
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
            raise ConfigError(f"{where}.levels must be an integer >= 1 or auto, got {levels!r}")
        if levels > allowed:
            raise ConfigError(
                f"{where}.levels = {levels}: a {grid} grid in {ty}x{tx} tiles of {cells} cells "
                f"allows at most {allowed} level(s) (each tile side must be a multiple of "
                f"2^levels); set it to {allowed} or less, or to auto"
            )
        return int(levels)

    def __repr__(self) -> str:
        return (
            f"WaveletSplit({self.height}x{self.width}, {self.wavelet}, levels={self.levels}, "
            f"tiles={self.tiles[0]}x{self.tiles[1]})"
        )

    # -- devices -----------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> WaveletSplit:
        """Cache the matrices on ``device`` (float32) and make it ``self.device``; returns self."""
        self.device = torch.empty(0, device=device).device
        self._matrices_on(self.device, torch.float32)
        return self

    def _matrices_on(
        self, device: torch.device, dtype: torch.dtype
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        key = (device, dtype)
        if key not in self._matrices:
            self._matrices[key] = [
                (r.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype))
                for r, c in self._reference
            ]
        return self._matrices[key]

    # -- the transform -----------------------------------------------------------------------

    def _check_field(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"expected a field (..., {self.height}, {self.width}) for this WaveletSplit, "
                f"got shape {tuple(x.shape)}"
            )

    def _check_band(self, band: int) -> int:
        if not -self.n_bands <= band < self.n_bands:
            raise ValueError(f"band {band} out of range for {self.n_bands} bands")
        return band % self.n_bands

    def transform(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The coefficients of each band, low band first: ``[(..., hJ, wJ), (..., 3, hJ, wJ),
        ..., (..., 3, H/2, W/2)]`` (hJ = H / 2^J); the details are (LH, HL, HH): low-pass
        rows and high-pass columns, the reverse, and high-pass both."""
        self._check_field(x)
        with _autocast_off(x.device):
            approx = _upcast(x)
            details = []
            for rows, cols in self._matrices_on(approx.device, approx.dtype):
                y = rows @ approx @ cols.T
                h, w = y.shape[-2] // 2, y.shape[-1] // 2
                approx = y[..., :h, :w]
                details.append(
                    torch.stack([y[..., :h, w:], y[..., h:, :w], y[..., h:, w:]], dim=-3)
                )
            return [approx, *reversed(details)]

    def inverse(self, coefficients: Sequence[torch.Tensor]) -> torch.Tensor:
        """The field of ``coefficients`` (as ``transform`` gives them): ``inverse(transform(x))
        == x`` to float precision."""
        if len(coefficients) != self.n_bands:
            raise ValueError(
                f"expected {self.n_bands} bands of coefficients, got {len(coefficients)}"
            )
        approx = coefficients[0]
        with _autocast_off(approx.device):
            matrices = self._matrices_on(approx.device, approx.dtype)
            for band in range(1, self.n_bands):
                rows, cols = matrices[self.levels - band]
                d = coefficients[band]
                y = torch.cat(
                    [
                        torch.cat([approx, d[..., 0, :, :]], -1),
                        torch.cat([d[..., 1, :, :], d[..., 2, :, :]], -1),
                    ],
                    -2,
                )
                approx = rows.T @ y @ cols
            return approx

    # -- energies ----------------------------------------------------------------------------

    def _region_sums(self, values: torch.Tensor) -> torch.Tensor:
        """``(..., h, w)`` coefficient values of one sub-band summed per region: ``(..., R)``."""
        ty, tx = self.tiles
        h, w = values.shape[-2:]
        blocks = values.reshape(*values.shape[:-2], ty, h // ty, tx, w // tx)
        return blocks.sum((-3, -1)).flatten(-2)

    def region_band_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy (sum of squared coefficients) of each field per region and band:
        ``(..., n_regions, n_bands)``; it sums to ``(x ** 2).sum((-2, -1))``."""
        energies = []
        for band, c in enumerate(self.transform(x)):
            power = c.square() if band == 0 else c.square().sum(-3)
            energies.append(self._region_sums(power))
        return torch.stack(energies, -1)

    def band_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy of each field per band: ``(..., n_bands)``, summing to ``(x ** 2).sum``."""
        return self.region_band_energy(x).sum(-2)

    def region_band_mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The split of ``F.mse_loss(a, b)`` per region and band: ``(n_regions, n_bands)``."""
        difference = self._difference(a, b)
        energy = self.region_band_energy(difference)
        return energy.reshape(-1, self.n_regions, self.n_bands).sum(0) / difference.numel()

    def band_mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Band split of the MSE: ``(n_bands,)`` that sums to ``F.mse_loss(a, b)``."""
        return self.region_band_mse(a, b).sum(0)

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
        with _autocast_off(a.device):
            return _upcast(a) - _upcast(b)

    # -- band and region parts ---------------------------------------------------------------

    def _region_mask(
        self, shape: tuple[int, int], region: int, device: torch.device
    ) -> torch.Tensor:
        ty, tx = self.tiles
        h, w = shape
        iy, ix = divmod(region, tx)
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        mask[iy * (h // ty) : (iy + 1) * (h // ty), ix * (w // tx) : (ix + 1) * (w // tx)] = True
        return mask

    def filter(self, x: torch.Tensor, band: int, region: int | None = None) -> torch.Tensor:
        """The part of ``x`` in one band (and, with ``region``, in that region's coefficients
        only): same shape; the parts of all bands (and regions) sum to ``x``."""
        band = self._check_band(band)
        if region is not None and not 0 <= region < self.n_regions:
            raise ValueError(f"region {region} out of range for {self.n_regions} regions")
        coefficients = self.transform(x)
        kept = []
        for b, c in enumerate(coefficients):
            if b != band:
                kept.append(torch.zeros_like(c))
            elif region is None:
                kept.append(c)
            else:
                kept.append(c * self._region_mask(tuple(c.shape[-2:]), region, c.device))
        return self.inverse(kept)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All band parts of ``x`` (one forward transform), low band first; they sum to x."""
        coefficients = self.transform(x)
        zeros = [torch.zeros_like(c) for c in coefficients]
        return [
            self.inverse([*zeros[:b], coefficients[b], *zeros[b + 1 :]])
            for b in range(self.n_bands)
        ]

    def tile(self, region: int) -> tuple[slice, slice]:
        """The grid cells of ``region``: ``field[..., rows, cols]``."""
        if not 0 <= region < self.n_regions:
            raise ValueError(f"region {region} out of range for {self.n_regions} regions")
        (ty, tx), (iy, ix) = self.tiles, divmod(region, self.tiles[1])
        th, tw = self.height // ty, self.width // tx
        return slice(iy * th, (iy + 1) * th), slice(ix * tw, (ix + 1) * tw)
