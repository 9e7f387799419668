"""The evaluation's error curves: MSE and SSIM per forecast step, the band MSE of each model
(bars) and the band MSE against lead time, as matplotlib ``Figure`` objects (no pyplot
state), drawn with the run's ``style.Styles`` (colour = model, line style / hatch = method),
the legend right of the axes and units from the store's CF metadata.

matplotlib is imported inside each function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdkd_pipeline.evaluation.metrics import BAND_NAMES
from sdkd_pipeline.evaluation.plots.style import (
    Styles,
    add_legend,
    combined_metadata,
    log_scale_if_wide,
    quantity_label,
)

__all__ = ["band_titles", "plot_band_errors", "plot_band_errors_by_lead", "plot_step_curves"]


def _setup(results: Sequence[Any], styles: Styles | None, metas: Any) -> tuple[Styles, dict]:
    return styles or Styles.of(results), combined_metadata(metas or [])


def _legend(figure: Any, styles: Styles, results: Sequence[Any], kind: str = "line") -> None:
    add_legend(figure, styles, [r.model for r in results], [r.method for r in results], kind=kind)


def _integer_steps(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_step_curves(
    results: Sequence[Any],
    title: str | None = None,
    *,
    styles: Styles | None = None,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
) -> Any:
    """MSE (in the channels' units squared) and SSIM per forecast step, one line per model:
    colour = model, line style and marker = method; a log MSE axis when the values span more
    than a factor 20."""
    from matplotlib.figure import Figure

    styles, meta = _setup(results, styles, channel_metadata)
    figure = Figure(figsize=(10.5, 4.0), layout="constrained")
    axes = figure.subplots(1, 2)
    for r in results:
        steps = np.arange(1, r.metrics.steps + 1)
        style = styles.of_result(r)
        for ax, name in zip(axes, ("mse", "ssim"), strict=True):
            ax.plot(steps, getattr(r.metrics, f"{name}_per_step"), **style.line_kwargs())
    log_scale_if_wide(axes[0], [v for r in results for v in r.metrics.mse_per_step])
    axes[0].set_ylabel(quantity_label(meta, "MSE", 2))
    axes[1].set_ylabel("SSIM")
    for ax in axes:
        ax.set_xlabel("lead time (forecast step)")
        _integer_steps(ax)
        ax.grid(True, alpha=0.3)
    _legend(figure, styles, results)
    if title:
        figure.suptitle(title)
    return figure


def band_titles(cutoffs: Sequence[float]) -> dict[str, str]:
    """``{"low": "low band: |k| ≤ 3.17", ...}`` for the evaluation's three bands and their two
    ``|k|`` cutoffs (cycles per domain length); plain band names without cutoffs."""
    if len(cutoffs) != len(BAND_NAMES) - 1:
        return {band: f"{band} band" for band in BAND_NAMES}
    c0, c1 = (float(c) for c in cutoffs)
    return {
        "low": f"low band: |k| ≤ {c0:.3g}",
        "mid": f"mid band: {c0:.3g} < |k| ≤ {c1:.3g}",
        "high": f"high band: |k| > {c1:.3g}",
    }


def plot_band_errors(
    results: Sequence[Any],
    title: str | None = None,
    *,
    styles: Styles | None = None,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
) -> Any:
    """Grouped bars of the low / mid / high band MSE of each model, averaged over the forecast
    steps (log scale when positive): colour = model, hatch = method."""
    from matplotlib.figure import Figure

    styles, meta = _setup(results, styles, channel_metadata)
    figure = Figure(figsize=(max(6.5, 0.5 * len(results) + 5.0), 4.0), layout="constrained")
    ax = figure.add_subplot()
    n = max(len(results), 1)
    width = 0.84 / n
    x = np.arange(len(BAND_NAMES))
    positive = False
    for i, r in enumerate(results):
        values = [r.metrics.band_mse[b] for b in BAND_NAMES]
        positive = positive or any(v > 0 for v in values)
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, **styles.of_result(r).bar_kwargs())
    cutoffs = results[0].metrics.band_cutoffs if results else ()
    titles = band_titles(cutoffs)
    ax.set_xticks(x, [titles[b].replace(": ", "\n") for b in BAND_NAMES])
    ax.set_xlabel("wavenumber band (|k| in cycles per domain length)")
    ax.set_ylabel(quantity_label(meta, "band MSE", 2))
    if positive:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    _legend(figure, styles, results, kind="bar")
    if title:
        figure.suptitle(title)
    return figure


def plot_band_errors_by_lead(
    results: Sequence[Any],
    title: str | None = None,
    *,
    styles: Styles | None = None,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
) -> Any:
    """The low, mid and high band MSE per forecast step (one panel per band, one line per
    model): where in the spectrum each model's error grows with the lead time."""
    from matplotlib.figure import Figure

    styles, meta = _setup(results, styles, channel_metadata)
    figure = Figure(figsize=(13.0, 4.0), layout="constrained")
    axes = figure.subplots(1, len(BAND_NAMES))
    cutoffs = results[0].metrics.band_cutoffs if results else ()
    titles = band_titles(cutoffs)
    for ax, band in zip(axes, BAND_NAMES, strict=True):
        values = []
        for r in results:
            per_step = r.metrics.band_mse_per_step[band]
            values.extend(per_step)
            steps = np.arange(1, len(per_step) + 1)
            ax.plot(steps, per_step, **styles.of_result(r).line_kwargs(gid=f"{band}:{r.key}"))
        log_scale_if_wide(ax, values)
        ax.set_title(titles[band], fontsize="medium")
        ax.set_xlabel("lead time (forecast step)")
        _integer_steps(ax)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(quantity_label(meta, "band MSE", 2))
    _legend(figure, styles, results)
    if title:
        figure.suptitle(title)
    return figure
