"""What distillation buys: the accuracy-latency Pareto plot (test MSE against CPU latency per
model, the non-dominated front highlighted) and the gap-closed bars (the share of the
teacher-student gap each distilled student closes, with a confidence interval over seeds
where there is more than one seed).

``pareto_front`` and ``seed_interval`` are the two computations; the rest draws them with the
run's ``style.Styles``. matplotlib is imported inside the plotting functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sdkd_pipeline.evaluation.plots.style import (
    Styles,
    add_legend,
    combined_metadata,
    no_data_figure,
    quantity_label,
)

__all__ = ["CI_LEVEL", "pareto_front", "plot_gap_closed", "plot_pareto", "seed_interval"]

CI_LEVEL = 0.95


def pareto_front(errors: Sequence[float], costs: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (another point dominates one when it
    is at most as costly and at most as wrong, and strictly better in one of the two), in
    order of increasing cost. Points with a non-finite error or cost are never on the front;
    identical points are both on it."""
    error = np.asarray(errors, dtype=np.float64)
    cost = np.asarray(costs, dtype=np.float64)
    if error.shape != cost.shape:
        raise ValueError(f"pareto_front: {error.size} errors for {cost.size} costs")
    valid = np.isfinite(error) & np.isfinite(cost)
    front = []
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        dominated = (
            others
            & (cost <= cost[i])
            & (error <= error[i])
            & ((cost < cost[i]) | (error < error[i]))
        )
        if not dominated.any():
            front.append(int(i))
    return sorted(front, key=lambda i: (cost[i], error[i], i))


def seed_interval(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, int]:
    """``(mean, half_width, n)`` of the finite ``values`` (one per seed): the Student-t
    interval ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)``; ``half_width`` is NaN for one seed
    (no interval) and the mean NaN for none."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(finite.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(finite.mean())
    if n == 1:
        return mean, math.nan, 1
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * finite.std(ddof=1) / math.sqrt(n))
    return mean, half, n


def plot_pareto(
    results: Sequence[Any],
    *,
    batch_size: int | None = None,
    styles: Styles | None = None,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
    title: str | None = None,
) -> Any:
    """Test MSE against eager CPU latency at ``batch_size`` (default: the smallest measured)
    per model, both axes log scale, colour = model and marker = method; the Pareto front
    (``pareto_front``) joined by a grey staircase (gid ``pareto_front``), its points filled
    and labelled, the dominated ones hollow (so a student's methods, which share one latency,
    stay visible on top of each other)."""
    from matplotlib.figure import Figure

    sizes = sorted({b for r in results for b in r.latency_ms})
    if batch_size is None and sizes:
        batch_size = sizes[0]
    rows = [
        r
        for r in results
        if batch_size is not None
        and math.isfinite(r.latency_ms.get(batch_size, math.nan))
        and r.latency_ms[batch_size] > 0
        and math.isfinite(r.metrics.mse)
    ]
    if not rows:
        return no_data_figure("no accuracy-latency plot: no model has a CPU latency", title)
    styles = styles or Styles.of(results)
    meta = combined_metadata(channel_metadata or [])
    latency = [r.latency_ms[batch_size] for r in rows]
    mse = [r.metrics.mse for r in rows]
    front = pareto_front(mse, latency)
    figure = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = figure.add_subplot()
    if len(front) > 1:
        ax.plot(
            [latency[i] for i in front],
            [mse[i] for i in front],
            drawstyle="steps-post",
            color="0.55",
            linewidth=2.2,
            zorder=1,
            gid="pareto_front",
        )
    for i, r in enumerate(rows):
        style = styles.of_result(r)
        on_front = i in front
        ax.plot(
            [latency[i]],
            [mse[i]],
            linestyle="none",
            marker=style.marker,
            markersize=10 if on_front else 9,
            color=style.color,
            markerfacecolor=style.color if on_front else "none",
            markeredgecolor="black" if on_front else style.color,
            markeredgewidth=1.2 if on_front else 1.8,
            label=style.label,
            gid=f"point:{r.key}",
            zorder=4 if on_front else 3,
        )
        if on_front:
            ax.annotate(
                style.label,
                (latency[i], mse[i]),
                xytext=(6, 5),
                textcoords="offset points",
                fontsize="x-small",
            )
    ax.set_xscale("log")
    if min(mse) > 0:
        ax.set_yscale("log")
    ax.set_xlabel(f"CPU latency, batch {batch_size} [ms]")
    ax.set_ylabel(quantity_label(meta, "test MSE", 2))
    ax.grid(True, which="both", alpha=0.25)
    _pareto_legend(figure, styles, rows)
    if title:
        figure.suptitle(title)
    return figure


def _pareto_legend(figure: Any, styles: Styles, rows: Sequence[Any]) -> None:
    """The models and methods of ``rows``, then what filled, hollow and the staircase mean."""
    from matplotlib.lines import Line2D

    filled = Line2D(
        [], [], linestyle="none", marker="o", color="0.3", markeredgecolor="black", mew=1.2
    )
    hollow = Line2D(
        [], [], linestyle="none", marker="o", markerfacecolor="none", color="0.3", mew=1.8
    )
    staircase = Line2D([], [], color="0.55", linewidth=2.2)
    add_legend(
        figure,
        styles,
        [r.model for r in rows],
        [r.method for r in rows],
        extra=[
            (filled, "on the Pareto front"),
            (hollow, "dominated"),
            (staircase, "Pareto front"),
        ],
    )


def _gap_groups(
    gaps: Mapping[tuple[str, str], Sequence[float]],
) -> tuple[list[str], list[str]]:
    students = list(dict.fromkeys(student for student, _ in gaps))
    methods = list(dict.fromkeys(method for _, method in gaps))
    return students, methods


def plot_gap_closed(
    gaps: Mapping[str, Mapping[tuple[str, str], Sequence[float]]],
    *,
    styles: Styles | None = None,
    reference_teacher: str | None = None,
    title: str | None = None,
) -> Any:
    """Bars of the gap closed per student (colour) and method (hatch), one panel per metric:
    ``gaps[metric][(student, method)]`` holds one value per seed. The bar is the mean; with
    two or more seeds an error bar shows the ``CI_LEVEL`` Student-t interval
    (``seed_interval``) and each bar says its ``n seeds``; with one seed everywhere there is
    no interval and the title says ``1 seed per bar``. Lines at 0 (the ``none`` student) and
    1 (the reference teacher)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = {metric: values for metric, values in gaps.items() if values}
    if not panels:
        return no_data_figure(
            "no gap closed to show: it needs a distilled student, its `none` run and a "
            "teacher better than that `none` run",
            title,
        )
    if styles is None:
        from types import SimpleNamespace

        styles = Styles.of(
            SimpleNamespace(role="student", model=s, method=m)
            for values in panels.values()
            for s, m in values
        )
    figure = Figure(figsize=(5.0 * len(panels) + 2.4, 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    every_n = {seed_interval(v)[2] for values in panels.values() for v in values.values()} - {0}
    label_bars = every_n != {1}
    for ax, (metric, values) in zip(axes, panels.items(), strict=True):
        students, methods = _gap_groups(values)
        width = 0.8 / max(len(methods), 1)
        for s, student in enumerate(students):
            for m, method in enumerate(methods):
                if (student, method) not in values:
                    continue
                mean, half, n = seed_interval(values[(student, method)])
                if n == 0:
                    continue
                x = s + (m - (len(methods) - 1) / 2) * width
                style = styles.of_series("student", student, method)
                ax.bar(x, mean, width, **style.bar_kwargs(gid=f"gap:{student}/{method}"))
                if n > 1:
                    ax.errorbar(x, mean, yerr=half, color="black", capsize=4, linewidth=1.2)
                if not label_bars:
                    continue
                top = mean + (half if n > 1 else 0.0)
                ax.annotate(
                    f"{n} seed{'s' if n > 1 else ''}",
                    (x, max(top, 0.0)),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    fontsize="x-small",
                )
        ax.axhline(0.0, color="black", linewidth=0.9)
        ax.axhline(1.0, color="black", linewidth=0.9, linestyle=(0, (4, 2)))
        ax.set_xticks(range(len(students)), students)
        ax.set_xlabel("student")
        ax.set_ylabel(f"gap closed ({metric.upper()})")
        ax.set_title(f"on test {metric.upper()}", fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
    teacher = f"teacher {reference_teacher}" if reference_teacher else "the teacher"
    note = (
        "1 seed per bar: no confidence interval"
        if not label_bars
        else f"mean over seeds, {CI_LEVEL:.0%} Student-t interval"
    )
    all_pairs = [pair for values in panels.values() for pair in values]
    add_legend(
        figure,
        styles,
        [s for s, _ in all_pairs],
        [m for _, m in all_pairs],
        kind="bar",
        extra=[
            (Line2D([], [], color="black", linewidth=0.9), "0 = none"),
            (Line2D([], [], color="black", linewidth=0.9, linestyle=(0, (4, 2))), f"1 = {teacher}"),
        ],
    )
    figure.suptitle(f"{title}\n{note}" if title else note)
    return figure
