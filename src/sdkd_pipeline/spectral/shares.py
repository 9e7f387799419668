"""Which scales are worth aligning: energy shares of fields (the data, a teacher's error) in
the evaluation's three log-spaced radial bands and above the distillation cutoff.

The bands are ``BandSplit.log_spaced(H, W, 3)``, named low / mid / high as the evaluation's band
MSE (``metrics.BAND_NAMES``): the mean (k = 0) is in the low band, each band is closed above,
and no window is applied, so the shares of an error field are its ``band_mse / mse``. The share
above a cutoff uses ``BandSplit.two_band(H, W, k_c)`` as the distillation loss does. Used by
``measure`` and ``analysis``; imports torch and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.spectral.bands import BandSplit

__all__ = [
    "SHARE_BANDS",
    "SHARE_KEYS",
    "BandTotals",
    "band_share_text",
    "band_shares",
    "share_bands",
]

SHARE_BANDS = ("low", "mid", "high")
SHARE_KEYS = (*SHARE_BANDS, "above_cutoff")


def share_bands(height: int, width: int) -> BandSplit:
    """The three bands of the shares: ``BandSplit.log_spaced(H, W, 3)``, as the evaluation's."""
    return BandSplit.log_spaced(height, width, len(SHARE_BANDS))


class BandTotals:
    """Float64 sums of the energy of fields in the share bands and above a cutoff."""

    def __init__(self, height: int, width: int, cutoff: float | None = None) -> None:
        self.bands = share_bands(height, width)
        self.above_split = None
        if cutoff is not None:
            try:
                self.above_split = BandSplit.two_band(height, width, cutoff)
            except ConfigError as error:
                raise ConfigError(
                    f"parameter distill.cutoff.k = {cutoff:g} does not split the "
                    f"{height}x{width} grid: {error}"
                ) from error
        self.energy = np.zeros(len(SHARE_BANDS))
        self.above = 0.0
        self.n_values = 0

    def add(self, fields: torch.Tensor) -> None:
        fields = fields.detach().double()
        energy = self.bands.band_energy(fields).reshape(-1, len(SHARE_BANDS)).sum(0)
        self.energy += energy.cpu().numpy()
        if self.above_split is not None:
            self.above += float(self.above_split.band_energy(fields)[..., 1].sum())
        self.n_values += fields.numel()

    def shares(self) -> dict[str, float | None]:
        """``low``, ``mid``, ``high`` (summing to 1), ``above_cutoff`` (with a cutoff) and
        ``mean_square`` (the mean of the squared field: the MSE for an error). The shares are
        None for a field without energy."""
        total = float(self.energy.sum())
        out: dict[str, float | None] = {
            name: float(e / total) if total > 0 else None
            for name, e in zip(SHARE_BANDS, self.energy, strict=True)
        }
        if self.above_split is not None:
            out["above_cutoff"] = self.above / total if total > 0 else None
        out["mean_square"] = total / self.n_values if self.n_values else None
        return out

    def band_ranges(self) -> dict[str, list[float]]:
        """``{low: [0, c0], mid: [c0, c1], high: [c1, k_max]}``: the low band holds the mean and
        each band is closed above (``c0 < |k| <= c1`` is mid)."""
        edges = [0.0, *self.bands.cutoffs, self.bands.k_max]
        return {name: [float(edges[i]), float(edges[i + 1])] for i, name in enumerate(SHARE_BANDS)}


def band_shares(fields: torch.Tensor, *, cutoff: float | None = None) -> dict[str, float | None]:
    """Share of the energy ``sum x^2`` of ``(..., H, W)`` fields (all of them together) in the
    low / mid / high bands of ``share_bands(H, W)`` and, with ``cutoff``, at ``|k| > cutoff``
    (``BandSplit.two_band``, as the distillation loss); also ``mean_square``."""
    totals = BandTotals(*fields.shape[-2:], cutoff)
    totals.add(fields)
    return totals.shares()


def band_share_text(shares: Mapping[str, Any]) -> str:
    """One line for the log: the data's and the teacher error's low / mid / high shares (and
    above the distillation cutoff)."""
    bands = shares["bands"]
    head = f"band shares low (k <= {bands['low'][1]:.3g}) / mid / high (k > {bands['high'][0]:.3g})"

    def triple(values: Mapping[str, Any]) -> str:
        return " / ".join(
            "n/a" if values.get(b) is None else f"{values[b]:.3f}" for b in SHARE_BANDS
        )

    text = f"{head}: data {triple(shares['data'])}, teacher error {triple(shares['teacher_error'])}"
    if shares.get("distill_cutoff_k") is not None:
        above = [shares[w].get("above_cutoff") for w in ("data", "teacher_error")]
        data_above, error_above = ("n/a" if v is None else f"{v:.3f}" for v in above)
        text += (
            f"; above distill cutoff k = {shares['distill_cutoff_k']:g}: data "
            f"{data_above}, teacher error {error_above}"
        )
    return text
