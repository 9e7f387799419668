"""Band weights that vary in space: the teacher's advantage per region and wavelet band.

``weighting: local`` (``sdkd``, ``sdkd_latent``; the variant ``sdkd_local``) replaces the global
radial bands of the advantage weighting by the (region, band) cells of an orthogonal wavelet
split (``sdkd_pipeline.spectral.WaveletSplit``: bands are wavelet levels, regions are the
``local.tiles`` tiles of the grid):

    L_KD = sum_{r, b} w_rb s_rb D_rb(G, F),
    w_rb = clip((E_rb(G, Y) - E_rb(F, Y)) / E_rb(G, F), 0, w_max)

with D_rb(A, B) the part of MSE(A, B) held by the wavelet coefficients of A - B in region r
and band b (the cells sum to MSE(A, B) exactly), E_rb its running mean over training batches
(bias-corrected EMA, detached) and s_rb the optional whitening factors. So a tile where the
student already beats the teacher at some scale is not distilled at that scale, while the
same scale elsewhere is.

The estimator is the global weighting's own ``BandAdvantage``, unchanged: ``RegionBands``
presents the cells as the flat "bands" of a band split. Hence, exactly:

- with one tile (``local.tiles: 1``) the loss *is* the global advantage loss over the wavelet
  bands (``sdkd`` with its ``BandSplit`` replaced by the ``WaveletSplit``); it is not the
  default ``sdkd``, whose bands are radial Fourier shells, not wavelet levels;
- with a teacher that is exact (F = Y) every weight is 1 and the loss is output KD, like
  ``sdkd`` (then E_rb(G, Y) = E_rb(G, F));
- whenever all cells get the same weight w, L_KD = w MSE(G, F).

Logged per epoch (``train_`` metrics), per wavelet band b: ``kd_band<b>`` (sum over regions of
D_rb: the band's part of MSE(G, F)), ``w_band<b>`` (the mean over regions of w_rb), and
``w_band<b>_min`` / ``w_band<b>_max`` (their spread over regions); ``w_zero``, the share of
cells not distilled (w_rb = 0). With one tile ``w_band<b>`` is the global weight of band b.
"""

from __future__ import annotations

import torch

from sdkd_pipeline.distill.band_weights import BandAdvantage
from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.spectral.wavelet import WaveletSplit

__all__ = ["RegionBands", "build_local_advantage", "local_advantage_sum", "local_split"]


class RegionBands:
    """The (region, band) cells of a ``WaveletSplit`` as the flat bands of a band split.

    ``n_bands = n_regions * split.n_bands``, cell ``r * split.n_bands + b``; ``band_mse`` and
    ``band_energy`` are the split's ``region_band_*`` flattened. This is what ``BandAdvantage``
    needs (``n_bands``, ``device``, ``band_mse``, ``band_energy``, ``to``).
    """

    def __init__(self, split: WaveletSplit) -> None:
        self.wavelets = split
        self.n_regions, self.n_scales = split.n_regions, split.n_bands
        self.n_bands = self.n_regions * self.n_scales

    @property
    def device(self) -> torch.device:
        return self.wavelets.device

    def to(self, device: torch.device | str) -> RegionBands:
        self.wavelets.to(device)
        return self

    def band_mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``(n_regions * n_scales,)`` summing to ``F.mse_loss(a, b)``."""
        return self.wavelets.region_band_mse(a, b).flatten()

    def band_energy(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n_regions * n_scales)`` summing to ``(x ** 2).sum((-2, -1))``."""
        return self.wavelets.region_band_energy(x).flatten(-2)

    def cells(self, values: torch.Tensor) -> torch.Tensor:
        """Flat per-cell values ``(n_bands,)`` as ``(n_regions, n_scales)``."""
        return values.reshape(self.n_regions, self.n_scales)

    def __repr__(self) -> str:
        return f"RegionBands({self.wavelets!r})"


def local_split(cfg: DistillConfig, height: int, width: int) -> WaveletSplit:
    """The wavelet split of ``cfg``'s ``local`` settings on an ``height x width`` grid; a
    ``ConfigError`` naming ``<cfg.param_path>.local.levels`` (or ``.tiles``) with the levels
    the grid allows when it does not fit."""
    return WaveletSplit(
        height,
        width,
        levels=cfg.local_levels,
        tiles=cfg.local_tiles,
        wavelet=cfg.local_wavelet,
        param_path=f"{cfg.param_path}.local",
    )


def build_local_advantage(
    cfg: DistillConfig, height: int, width: int
) -> tuple[RegionBands, BandAdvantage]:
    """The cells and their advantage estimator for ``weighting: local``."""
    cells = RegionBands(local_split(cfg, height, width))
    advantage = BandAdvantage(
        cells,  # type: ignore[arg-type]  # the band-split protocol BandAdvantage uses
        w_max=cfg.advantage_w_max,
        momentum=cfg.advantage_momentum,
        whiten=cfg.advantage_whiten,
        whiten_max=cfg.advantage_whiten_max,
    )
    return cells, advantage


def local_advantage_sum(
    cells: RegionBands,
    advantage: BandAdvantage,
    distances: torch.Tensor,
    components: dict[str, torch.Tensor],
) -> torch.Tensor:
    """``sum_rb w_rb s_rb D_rb`` from the flat cell distances ``distances`` (with graph),
    logging the per-band summaries of the module docstring into ``components``."""
    weights = cells.cells(advantage.weights().to(distances.device))
    scales = cells.cells(advantage.scales().to(distances.device))
    d = cells.cells(distances)
    detached = d.detach()
    for b in range(cells.n_scales):
        components[f"kd_band{b}"] = detached[:, b].sum()
        components[f"w_band{b}"] = weights[:, b].mean()
        components[f"w_band{b}_min"] = weights[:, b].min()
        components[f"w_band{b}_max"] = weights[:, b].max()
    components["w_zero"] = (weights == 0).float().mean()
    return (weights * scales * d).sum()
