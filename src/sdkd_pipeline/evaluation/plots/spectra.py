"""The forecasts' radial energy spectra against the truth's, the SDKD claim itself: does a
student's forecast keep the truth's energy at high wavenumbers?

``TestPassFields`` watches the evaluation's one pass over the test split
(``accuracy._evaluate_pass(..., observe=...)``) and keeps, per channel, the truth's min and
max and the radial energy spectrum ``E(k)`` (``spectral.radial_energy_spectrum``, shells of
integer ``|k|``) of the de-normalized truth and of each model's forecast, averaged over every
test window and forecast step. ``plot_forecast_spectra`` draws them log-log, one column per
channel, with the ratio ``E_forecast / E_truth`` below (1 = the truth's energy at that
scale; below 1 = a smoothed forecast).

Imports numpy and torch at module level; matplotlib inside the plotting function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.evaluation.plots.style import (
    TRUTH_COLOR,
    Styles,
    add_legend,
    no_data_figure,
    quantity_label,
)
from sdkd_pipeline.spectral import radial_energy_spectrum

__all__ = ["MAX_SPECTRUM_CHANNELS", "TestPassFields", "plot_forecast_spectra"]

MAX_SPECTRUM_CHANNELS = 6


class TestPassFields:
    """What the figures need from the test pass, accumulated batch by batch: the truth's min
    and max per channel and the mean radial spectrum per channel of the truth and of each
    forecast. ``observe(None, truth)`` once per batch, ``observe(key, forecast)`` per model;
    fields ``(N, T, C, H, W)``, de-normalized, on any device."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self) -> None:
        self.k: np.ndarray | None = None
        self._sums: dict[str | None, np.ndarray] = {}
        self._counts: dict[str | None, int] = {}
        self.truth_min: np.ndarray | None = None
        self.truth_max: np.ndarray | None = None

    def observe(self, key: str | None, fields: torch.Tensor) -> None:
        """Add one batch of the truth (``key=None``) or of model ``key``'s forecast."""
        if fields.dim() != 5 or fields.shape[0] == 0:
            return
        k, energy = radial_energy_spectrum(fields, reduce_dims=(0, 1))  # (C, K)
        count = int(fields.shape[0] * fields.shape[1])
        self.k = k
        self._sums[key] = self._sums.get(key, 0.0) + energy * count
        self._counts[key] = self._counts.get(key, 0) + count
        if key is None:
            per_channel = fields.detach().movedim(2, 0).reshape(fields.shape[2], -1)
            low = per_channel.amin(1).double().cpu().numpy()
            high = per_channel.amax(1).double().cpu().numpy()
            self.truth_min = low if self.truth_min is None else np.minimum(self.truth_min, low)
            self.truth_max = high if self.truth_max is None else np.maximum(self.truth_max, high)

    def spectrum(self, key: str | None) -> np.ndarray | None:
        """Mean ``E(k)`` per channel ``(C, K)`` of the truth (None) or of model ``key``."""
        if key not in self._sums:
            return None
        return self._sums[key] / self._counts[key]

    @property
    def keys(self) -> list[str]:
        return [key for key in self._sums if key is not None]


def _positive(k: np.ndarray, energy: np.ndarray) -> np.ndarray:
    return (k > 0) & np.isfinite(energy) & (energy > 0)


def plot_forecast_spectra(
    k: np.ndarray | None,
    truth: np.ndarray | None,
    forecasts: Mapping[str, np.ndarray],
    results: Sequence[Any],
    *,
    styles: Styles | None = None,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
    band_cutoffs: Sequence[float] = (),
    title: str | None = None,
) -> Any:
    """Log-log ``E(k)`` of the truth (black, gid ``spectrum_truth_<c>``) and of each model's
    forecast (gid ``spectrum_<key>_<c>``, styled by ``styles``) for every channel ``c`` (up to
    ``MAX_SPECTRUM_CHANNELS``), ``truth`` and each ``forecasts[key]`` ``(C, K)`` over shells
    ``k``; below each, ``E_forecast / E_truth`` on a log axis with a line at 1. The band
    cutoffs of the band MSE are drawn as thin vertical lines. ``results`` name the models
    (``key``, ``role``, ``model``, ``method``) in legend order. Shell 0 (the mean) is left out.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if k is None or truth is None:
        return no_data_figure("no forecast spectra: the test pass saw no data", title)
    styles = styles or Styles.of(results)
    truth = np.atleast_2d(np.asarray(truth, dtype=np.float64))
    channels = min(truth.shape[0], MAX_SPECTRUM_CHANNELS)
    metas = list(channel_metadata or [])
    metas += [
        {"long_name": f"channel {c}", "units": "unknown"} for c in range(len(metas), channels)
    ]
    figure = Figure(figsize=(4.6 * channels + 2.6, 6.4), layout="constrained")
    axes = figure.subplots(2, channels, squeeze=False, sharex="col", height_ratios=(2.2, 1.0))
    shown = [r for r in results if r.key in forecasts]
    for c in range(channels):
        top, bottom = axes[0, c], axes[1, c]
        use = _positive(k, truth[c])
        top.loglog(
            k[use],
            truth[c][use],
            color=TRUTH_COLOR,
            linewidth=2.6,
            label="truth",
            gid=f"spectrum_truth_{c}",
            zorder=5,
        )
        for r in shown:
            energy = np.atleast_2d(np.asarray(forecasts[r.key], dtype=np.float64))[c]
            style = styles.of_result(r)
            mine = _positive(k, energy)
            every = max(1, int(mine.sum()) // 8)  # markers name the method, not every shell
            top.loglog(
                k[mine],
                energy[mine],
                **style.line_kwargs(gid=f"spectrum_{r.key}_{c}", markevery=every),
            )
            both = mine & use
            bottom.semilogy(
                k[both],
                energy[both] / truth[c][both],
                **style.line_kwargs(gid=f"ratio_{r.key}_{c}", markevery=every),
            )
        bottom.axhline(1.0, color=TRUTH_COLOR, linewidth=1.2)
        for ax in (top, bottom):
            for cutoff in band_cutoffs:
                ax.axvline(cutoff, color="0.6", linewidth=0.8, gid="band_cutoff")
            ax.grid(True, which="major", alpha=0.3)
        top.set_title(metas[c].get("long_name") or f"channel {c}", fontsize="medium")
        top.set_ylabel(quantity_label(metas[c], "E(k)", 2))
        bottom.set_ylabel("E_forecast / E_truth")
        bottom.set_xlabel("k (cycles per domain length)")
    extra = [(Line2D([], [], color=TRUTH_COLOR, linewidth=2.6), "truth")]
    if band_cutoffs:
        extra.append((Line2D([], [], color="0.6", linewidth=0.8), "band cutoffs"))
    add_legend(figure, styles, [r.model for r in shown], [r.method for r in shown], extra=extra)
    if title:
        more = truth.shape[0] - channels
        figure.suptitle(
            title + (f" (first {channels} channels of {truth.shape[0]})" if more else "")
        )
    return figure
