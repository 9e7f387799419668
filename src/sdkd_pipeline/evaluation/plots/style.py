"""One visual encoding for every figure of an evaluation: colour = model, line style, marker
and hatch = method, and the legends, axis labels and colormaps the figures share.

``Styles.of(results)`` assigns the colours and styles once per run, in the table's row order
(teachers, students, then the baselines), so a model has the same colour and a method the
same line style in every figure of the run. Learned models take the Okabe-Ito palette
(colour-blind safe; its yellow last, as it is faint on white), then Paul Tol's muted palette;
the baselines (reference forecasters, not models) are greys. The teachers' ``supervised`` is
solid, the baselines' ``baseline`` dotted, and the students' methods take dashed and
dash-dotted patterns in the order they appear.

Legends go outside the data: ``add_legend`` puts one legend to the right of the axes, with a
"model" section (colours) and a "method" section (line styles or hatches).

Units and long names come from the store's CF coordinates (``data.cf.channel_metadata``):
``channel_metadata_of`` reads them from a ``WindowDataset`` and falls back to the channel's
name and unknown units; ``quantity_label`` and ``units_suffix`` turn them into axis labels
and table headers. ``field_colormap`` picks a sequential colormap for a non-negative field
and a diverging one centred at 0 for a signed one.

Imports only numpy at module level; matplotlib inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdkd_pipeline.data.cf import UNKNOWN_UNITS, axis_label
from sdkd_pipeline.evaluation.baselines import BASELINE_ROLE

__all__ = [
    "ERROR_COLORMAP",
    "OKABE_ITO",
    "Styles",
    "add_legend",
    "channel_metadata_of",
    "combined_metadata",
    "field_colormap",
    "quantity_label",
    "units_suffix",
]

# Okabe & Ito (2008), without black (kept for the truth); yellow last: faint on white
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
# Paul Tol's "muted" scheme, for runs with more learned models than Okabe-Ito has colours
TOL_MUTED = (
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
)
BASELINE_GREYS = ("#4D4D4D", "#9A9A9A", "#707070", "#BDBDBD")
TRUTH_COLOR = "black"
SEQUENTIAL_COLORMAP = "viridis"
DIVERGING_COLORMAP = "RdBu_r"
ERROR_COLORMAP = "magma_r"

TEACHER_METHOD = "supervised"
BASELINE_METHOD = "baseline"
# (line style, marker, hatch) of the teachers' and the baselines' method
FIXED_METHOD_STYLES = {
    TEACHER_METHOD: ("-", "o", ""),
    BASELINE_METHOD: ((0, (1, 1.5)), "X", ".."),
}
# the students' methods, in the order they appear
STUDENT_LINESTYLES = (
    (0, (5, 2)),
    (0, (7, 2, 1.5, 2)),
    (0, (12, 3)),
    (0, (7, 2, 1.5, 2, 1.5, 2)),
    (0, (2.5, 1.5)),
    (0, (4, 1.5, 1.5, 1.5, 1.5, 1.5)),
    (0, (9, 2, 4, 2)),
)
STUDENT_MARKERS = ("s", "^", "D", "v", "P", "*", "<")
STUDENT_HATCHES = ("", "//", "\\\\", "xx", "--", "++", "oo")


@dataclass(frozen=True)
class SeriesStyle:
    """How one (model, method) series is drawn: ``line_kwargs`` for ``Axes.plot``,
    ``bar_kwargs`` for ``Axes.bar``."""

    color: str
    linestyle: Any
    marker: str
    hatch: str
    label: str

    def line_kwargs(self, **extra: Any) -> dict[str, Any]:
        return {
            "color": self.color,
            "linestyle": self.linestyle,
            "marker": self.marker,
            "markersize": 4,
            "linewidth": 1.6,
            "label": self.label,
            **extra,
        }

    def bar_kwargs(self, **extra: Any) -> dict[str, Any]:
        return {
            "color": self.color,
            "hatch": self.hatch,
            "edgecolor": "black",
            "linewidth": 0.6,
            "label": self.label,
            **extra,
        }


def series_label(role: str, model: str, method: str) -> str:
    """``model`` for a teacher or a baseline, ``model (method)`` for a student."""
    return model if role in ("teacher", BASELINE_ROLE) else f"{model} ({method})"


@dataclass
class Styles:
    """Colours by model and line styles, markers and hatches by method, for one run."""

    colors: dict[str, str] = field(default_factory=dict)
    methods: dict[str, tuple[Any, str, str]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, results: Iterable[Any]) -> Styles:
        """The styles of ``results`` (anything with ``role``, ``model``, ``method``, such as
        ``ModelResult``), assigned in the order learned models first (as given), baselines
        last."""
        rows = list(results)
        styles = cls()
        learned = [r for r in rows if r.role != BASELINE_ROLE]
        baselines = [r for r in rows if r.role == BASELINE_ROLE]
        palette = OKABE_ITO + TOL_MUTED
        for r in learned:
            if r.model not in styles.colors:
                styles.colors[r.model] = palette[len(styles.colors) % len(palette)]
            styles.roles.setdefault(r.model, r.role)
        for i, name in enumerate(dict.fromkeys(r.model for r in baselines)):
            styles.colors.setdefault(name, BASELINE_GREYS[i % len(BASELINE_GREYS)])
            styles.roles.setdefault(name, BASELINE_ROLE)
        student_methods = 0
        for r in rows:
            if r.method in styles.methods:
                continue
            if r.method in FIXED_METHOD_STYLES:
                styles.methods[r.method] = FIXED_METHOD_STYLES[r.method]
                continue
            i = student_methods
            styles.methods[r.method] = (
                STUDENT_LINESTYLES[i % len(STUDENT_LINESTYLES)],
                STUDENT_MARKERS[i % len(STUDENT_MARKERS)],
                STUDENT_HATCHES[i % len(STUDENT_HATCHES)],
            )
            student_methods += 1
        return styles

    def of_series(self, role: str, model: str, method: str) -> SeriesStyle:
        """The style of one series (a model or method not seen by ``of`` gets grey / solid)."""
        linestyle, marker, hatch = self.methods.get(method, ("-", "o", ""))
        return SeriesStyle(
            color=self.colors.get(model, "0.5"),
            linestyle=linestyle,
            marker=marker,
            hatch=hatch,
            label=series_label(role, model, method),
        )

    def of_result(self, result: Any) -> SeriesStyle:
        return self.of_series(result.role, result.model, result.method)


def add_legend(
    figure: Any,
    styles: Styles,
    models: Sequence[str],
    methods: Sequence[str],
    *,
    kind: str = "line",
    extra: Sequence[tuple[Any, str]] = (),
) -> Any:
    """One legend right of the axes (never over the data): a "model" section with each of
    ``models``' colour, a "method" section with each of ``methods``' line style and marker
    (``kind="line"``) or hatch (``kind="bar"``), then ``extra`` ``(handle, label)`` pairs."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def header() -> Any:
        return Patch(visible=False)

    handles: list[Any] = []
    labels: list[str] = []
    headers: list[int] = []
    models = list(dict.fromkeys(models))
    methods = list(dict.fromkeys(methods))
    if models:
        headers.append(len(labels))
        handles.append(header())
        labels.append("model")
        for model in models:
            color = styles.colors.get(model, "0.5")
            if kind == "bar":
                handles.append(Patch(facecolor=color, edgecolor="black", linewidth=0.6))
            else:
                handles.append(Line2D([], [], color=color, linewidth=3))
            labels.append(model)
    if methods:
        headers.append(len(labels))
        handles.append(header())
        labels.append("method")
        for method in methods:
            linestyle, marker, hatch = styles.methods.get(method, ("-", "o", ""))
            if kind == "bar":
                handles.append(
                    Patch(facecolor="white", edgecolor="black", hatch=hatch, linewidth=0.6)
                )
            else:
                handles.append(
                    Line2D([], [], color="0.2", linestyle=linestyle, marker=marker, linewidth=1.6)
                )
            labels.append(method)
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    legend = figure.legend(
        handles,
        labels,
        loc="outside right center",
        fontsize="small",
        handlelength=3.2,
        frameon=False,
    )
    for i in headers:
        legend.get_texts()[i].set_fontweight("bold")
    return legend


def channel_metadata_of(windows: Any) -> list[dict[str, str]]:
    """``[{"long_name", "units"}]`` per channel of ``windows`` (a ``WindowDataset``: its
    ``channels`` and ``coords``), read by ``data.cf.channel_metadata``; the channel's name and
    unknown units when the store has no CF coordinates."""
    import xarray as xr

    from sdkd_pipeline.data.cf import LONG_NAME, UNITS, channel_metadata

    channels = [str(c) for c in (getattr(windows, "channels", None) or [])]
    if not channels:
        return [{"long_name": "field", "units": UNKNOWN_UNITS}]
    coords: dict[str, Any] = {"channel": channels}
    stored = getattr(windows, "coords", None) or {}
    for name in (LONG_NAME, UNITS):
        values = stored.get(name)
        if values is not None and len(values) == len(channels):
            coords[name] = ("channel", [str(v) for v in np.asarray(values).ravel()])
    meta = channel_metadata(xr.Dataset(coords=coords))
    return [meta[c] for c in channels]


def combined_metadata(metas: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The metadata of a metric averaged over channels: one channel's own; several channels'
    names joined (``"3 channels"`` past three) and their units when they agree, else
    ``"mixed"``."""
    metas = list(metas) or [{"long_name": "field", "units": UNKNOWN_UNITS}]
    if len(metas) == 1:
        return dict(metas[0])
    names = [m.get("long_name") or "field" for m in metas]
    units = {m.get("units") or UNKNOWN_UNITS for m in metas}
    return {
        "long_name": ", ".join(names) if len(names) <= 3 else f"{len(names)} channels",
        "units": units.pop() if len(units) == 1 else "mixed",
    }


def units_suffix(meta: Mapping[str, str], power: int = 1) -> str:
    """``"[(1/s)²]"``: the bracket ``data.cf.axis_label`` writes for ``meta``'s units raised to
    ``power`` (``"[mixed units]"`` for channels that disagree)."""
    if meta.get("units") == "mixed":
        return "[mixed units]"
    label = axis_label({"long_name": "x", "units": meta.get("units") or ""}, None, power)
    return label[label.index("[") :]


def quantity_label(
    meta: Mapping[str, str], quantity: str, power: int = 1, width: int | None = 38
) -> str:
    """``"MSE of vorticity [(1/s)²]"`` (``data.cf.axis_label``), with ``[mixed units]`` for
    the combined metadata of channels whose units disagree; broken into lines of at most
    ``width`` characters (an axis label longer than its axis is cut off), None: one line."""
    if meta.get("units") == "mixed":
        label = f"{quantity} of {meta.get('long_name') or 'field'} [mixed units]"
    else:
        label = axis_label(meta, quantity, power)
    if width is None or len(label) <= width:
        return label
    import textwrap

    return "\n".join(textwrap.wrap(label, width, break_long_words=False))


def field_colormap(
    low: float, high: float, *, sign_from: float | None = None
) -> tuple[str, float, float, bool]:
    """``(colormap, vmin, vmax, signed)`` for a field shown over ``[low, high]``: a sequential
    colormap over ``[low, high]`` for a non-negative field (counts, temperatures in K), a
    diverging one centred at 0 (``[-m, m]``, ``m = max(|low|, |high|)``) for a signed one.
    The field is signed when ``sign_from`` (e.g. the truth's minimum over the whole split)
    or else ``low`` is below 0."""
    low, high = float(low), float(high)
    signed = (low if sign_from is None else float(sign_from)) < 0
    if not signed:
        return SEQUENTIAL_COLORMAP, low, max(high, low + 1e-12), False
    bound = max(abs(low), abs(high), 1e-12)
    return DIVERGING_COLORMAP, -bound, bound, True


def log_scale_if_wide(axes: Any, values: Iterable[float], ratio: float = 20.0) -> None:
    """A log y axis when every value is positive and they span more than ``ratio``."""
    array = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if array.size and (array > 0).all() and array.max() / array.min() > ratio:
        axes.set_yscale("log")


def no_data_figure(message: str, title: str | None = None) -> Any:
    """A small figure that says why there is nothing to draw (so every output exists)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 2.0), layout="constrained")
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", wrap=True, gid="no_data")
    if title:
        figure.suptitle(title)
    return figure
