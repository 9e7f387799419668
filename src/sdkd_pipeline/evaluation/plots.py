"""The evaluation's figures: error per forecast step, error by wavenumber band and the
prediction panel, as matplotlib ``Figure`` objects (no pyplot state).

matplotlib is imported inside each function, so importing this module needs only numpy and
torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.evaluation.baselines import BASELINE_ROLE
from sdkd_pipeline.evaluation.metrics import BAND_NAMES
from sdkd_pipeline.evaluation.tables import ModelResult

__all__ = ["plot_band_errors", "plot_prediction_panel", "plot_step_curves"]


def _label(r: ModelResult) -> str:
    return r.model if r.role in ("teacher", BASELINE_ROLE) else f"{r.model} ({r.method})"


def plot_step_curves(results: Sequence[ModelResult], title: str | None = None) -> Any:
    """MSE and SSIM per forecast step, one line per model (teachers solid, students dashed,
    baselines dotted)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 4.0), layout="constrained")
    axes = figure.subplots(1, 2)
    for r in results:
        steps = np.arange(1, r.metrics.steps + 1)
        style = {"teacher": "-", BASELINE_ROLE: ":"}.get(r.role, "--")
        for ax, name in zip(axes, ("mse", "ssim"), strict=True):
            ax.plot(
                steps,
                getattr(r.metrics, f"{name}_per_step"),
                style,
                marker="o",
                markersize=3,
                label=_label(r),
            )
    from matplotlib.ticker import MaxNLocator

    axes[0].set_ylabel("MSE (physical units²)")
    axes[1].set_ylabel("SSIM")
    for ax in axes:
        ax.set_xlabel("forecast step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def plot_band_errors(results: Sequence[ModelResult], title: str | None = None) -> Any:
    """Grouped bars of the low / mid / high band MSE of each model (log scale)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(6.0, 1.2 * len(results) + 3), 4.0), layout="constrained")
    ax = figure.add_subplot()
    n = max(len(results), 1)
    width = 0.8 / n
    x = np.arange(len(BAND_NAMES))
    positive = False
    for i, r in enumerate(results):
        values = [r.metrics.band_mse[b] for b in BAND_NAMES]
        positive = positive or any(v > 0 for v in values)
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=_label(r))
    ax.set_xticks(x, list(BAND_NAMES))
    ax.set_xlabel("wavenumber band")
    ax.set_ylabel("band MSE (physical units²)")
    if positive:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return figure


def plot_prediction_panel(
    truth: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    *,
    step: int = -1,
    channel: int = 0,
    window_labels: Sequence[Any] | None = None,
    title: str | None = None,
) -> Any:
    """Rows: windows; columns: truth then each prediction, at forecast ``step`` and
    ``channel``, with one color scale per row shared by all its images."""
    from matplotlib.figure import Figure

    truth = torch.as_tensor(truth)
    n_rows, n_cols = truth.shape[0], 1 + len(predictions)
    figure = Figure(figsize=(2.4 * n_cols + 0.8, 2.4 * n_rows + 0.5), layout="constrained")
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    labels = list(window_labels) if window_labels is not None else list(range(n_rows))
    for row in range(n_rows):
        images = {"truth": truth[row, step, channel]}
        images.update({name: p[row, step, channel] for name, p in predictions.items()})
        vmin = min(float(img.min()) for img in images.values())
        vmax = max(float(img.max()) for img in images.values())
        last = None
        for col, (name, img) in enumerate(images.items()):
            ax = axes[row, col]
            last = ax.imshow(img.numpy(), origin="lower", cmap="RdBu_r", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize="small")
            if col == 0:
                ax.set_ylabel(f"window {labels[row]}")
        figure.colorbar(last, ax=list(axes[row]), shrink=0.8)
    if title:
        figure.suptitle(title)
    return figure
