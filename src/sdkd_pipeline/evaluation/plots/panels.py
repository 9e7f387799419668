"""The prediction panel: for each shown test window, the truth and every model's forecast at
several lead times side by side (the lead-time strip), and next to them the error maps
``|forecast - truth|`` at the same lead times.

One channel per panel. Its colormap follows the field's sign (``style.field_colormap``):
sequential for a non-negative field (traffic counts, temperatures in K), diverging and
centred at 0 for a signed one, over the truth's range at the shown lead times (a forecast
outside it saturates, and the colour bar says so); the error maps share one sequential
colormap from 0 to the largest error of the window. matplotlib is imported inside
``plot_prediction_panel``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.evaluation.plots.style import ERROR_COLORMAP, field_colormap, units_suffix

__all__ = ["DEFAULT_LEADS", "lead_steps", "plot_prediction_panel"]

DEFAULT_LEADS = 4
IMAGE_INCHES = 1.45


def lead_steps(steps: int, step: int = -1, count: int = DEFAULT_LEADS) -> list[int]:
    """Up to ``count`` forecast steps (0-based) evenly spaced from the first to ``step``
    (an index: negative counts from the end; out of range: the last), both included."""
    if steps < 1:
        raise ValueError(f"lead_steps: a forecast has at least one step, got {steps}")
    final = step % steps if -steps <= step < steps else steps - 1
    return [int(s) for s in np.unique(np.round(np.linspace(0, final, min(count, final + 1))))]


def plot_prediction_panel(
    truth: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    *,
    step: int = -1,
    channel: int = 0,
    window_labels: Sequence[Any] | None = None,
    title: str | None = None,
    leads: int = DEFAULT_LEADS,
    value_range: tuple[float, float] | None = None,
    channel_metadata: Mapping[str, str] | None = None,
) -> Any:
    """Rows per window (``truth`` ``(K, T, C, H, W)`` and each ``predictions[label]`` of the
    same shape): the truth, then each forecast; columns: ``leads`` lead times from the first
    forecast step to ``step`` (``lead_steps``), then the error maps ``|forecast - truth|`` at
    the same lead times (the truth's row has none), all of ``channel``.

    The colormap is chosen from ``value_range`` (the truth's min and max over the split,
    when known) or else from the shown truth: sequential when the minimum is >= 0,
    diverging centred at 0 otherwise. All field images of one window share one colour scale,
    all its error maps another; one colour bar each, labelled with ``channel_metadata``'s
    units.
    """
    from matplotlib.figure import Figure

    truth = torch.as_tensor(truth).detach().cpu().double()
    n_windows, n_steps = int(truth.shape[0]), int(truth.shape[1])
    shown = lead_steps(n_steps, step, leads)
    rows_per_window = 1 + len(predictions)
    meta = dict(channel_metadata or {})
    aspect = float(truth.shape[-2]) / float(truth.shape[-1])  # rows follow the grid's shape
    figure = Figure(
        figsize=(
            2 * len(shown) * IMAGE_INCHES + 4.6,
            rows_per_window * n_windows * (IMAGE_INCHES * aspect + 0.08) + 1.0,
        ),
        layout="constrained",
    )
    grid = figure.add_gridspec(rows_per_window * n_windows, 2 * len(shown))
    labels = list(window_labels) if window_labels is not None else list(range(n_windows))
    for w in range(n_windows):
        fields = {"truth": truth[w, :, channel].numpy()}
        fields.update(
            {
                name: torch.as_tensor(p)[w, :, channel].detach().cpu().double().numpy()
                for name, p in predictions.items()
            }
        )
        split_low = value_range[0] if value_range is not None else None
        _window_block(
            figure, grid, w * rows_per_window, fields, shown, f"window {labels[w]}", meta, split_low
        )
    if title:
        figure.suptitle(title)
    return figure


def _extend(fields: Mapping[str, np.ndarray], shown: list[int], vmin: float, vmax: float) -> str:
    """The colour bar's ``extend``: which ends some shown forecast goes past."""
    below = any(float(f[shown].min()) < vmin for f in fields.values())
    above = any(float(f[shown].max()) > vmax for f in fields.values())
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )


def _window_block(
    figure: Any,
    grid: Any,
    first_row: int,
    fields: Mapping[str, np.ndarray],
    shown: list[int],
    window: str,
    meta: Mapping[str, str],
    split_low: float | None,
) -> None:
    """One window's rows from ``first_row``: ``fields`` (``"truth"`` first, then each forecast,
    ``(T, H, W)``) at the ``shown`` steps, the error maps right of the forecasts, one colour
    bar for the fields and one for the errors."""
    true = fields["truth"]
    n_leads = len(shown)
    cmap, vmin, vmax, _ = field_colormap(
        float(true[shown].min()), float(true[shown].max()), sign_from=split_low
    )
    errors = {name: np.abs(f - true) for name, f in fields.items() if name != "truth"}
    error_max = max([float(e[shown].max()) for e in errors.values()] + [1e-12])
    field_axes, error_axes = [], []
    field_image = error_image = None
    for r, (name, values) in enumerate(fields.items()):
        row = first_row + r
        for j, s in enumerate(shown):
            ax = figure.add_subplot(grid[row, j])
            field_image = ax.imshow(
                values[s],
                origin="lower",
                aspect="auto",
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                gid=f"field:{name}",
            )
            field_axes.append(ax)
            _bare(ax)
            if r == 0:
                ax.set_title(f"lead {s + 1}", fontsize="small")
            if j == 0:  # horizontal row labels: readable, and as tall as one line
                ax.set_ylabel(
                    f"{window}\n{name}" if r == 0 else name,
                    fontsize="small",
                    rotation=0,
                    ha="right",
                    va="center",
                )
            if name == "truth":
                continue
            ax = figure.add_subplot(grid[row, n_leads + j])
            error_image = ax.imshow(
                errors[name][s],
                origin="lower",
                aspect="auto",
                cmap=ERROR_COLORMAP,
                vmin=0.0,
                vmax=error_max,
                gid=f"error:{name}",
            )
            error_axes.append(ax)
            _bare(ax)
    if errors:  # the truth's row has no error maps: say there what the block shows
        ax = figure.add_subplot(grid[first_row, n_leads:])
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "error maps |forecast − truth|\nat the same lead times",
            ha="center",
            va="center",
            fontsize="medium",
            transform=ax.transAxes,
        )
    units = units_suffix(meta) if meta else ""
    if field_image is not None:
        bar = figure.colorbar(
            field_image,
            ax=field_axes,
            shrink=0.7,
            aspect=35,
            extend=_extend(fields, shown, vmin, vmax),
        )
        bar.set_label(f"{meta.get('long_name', 'field')} {units}".strip(), fontsize="small")
    if error_image is not None:
        bar = figure.colorbar(error_image, ax=error_axes, shrink=0.7, aspect=35)
        bar.set_label(f"|forecast − truth| {units}".strip(), fontsize="small")


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
