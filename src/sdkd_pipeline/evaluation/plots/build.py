"""Every figure of one dataset's evaluation, with one ``Styles`` for the run: ``FIGURES``
names them (each is written as ``<dataset>_<name>.png``) and ``evaluation_figures`` draws
them from what ``evaluation.checkpoints.evaluate_checkpoints`` has: the rows, the table, the
kept panel windows and the ``TestPassFields`` of the test pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from sdkd_pipeline.evaluation.plots.curves import (
    plot_band_errors,
    plot_band_errors_by_lead,
    plot_step_curves,
)
from sdkd_pipeline.evaluation.plots.panels import plot_prediction_panel
from sdkd_pipeline.evaluation.plots.spectra import TestPassFields, plot_forecast_spectra
from sdkd_pipeline.evaluation.plots.style import Styles, series_label, units_suffix
from sdkd_pipeline.evaluation.plots.tradeoffs import plot_gap_closed, plot_pareto
from sdkd_pipeline.evaluation.tables import BASELINE_METHOD

__all__ = ["FIGURES", "evaluation_figures", "gap_closed_by_seed"]

# file name suffix -> what the figure shows
FIGURES = {
    "metrics_per_step": "MSE and SSIM per forecast step",
    "band_errors": "low / mid / high band MSE of each model",
    "predictions": "lead-time strip of the truth and each forecast, with error maps",
    "band_errors_by_lead": "low / mid / high band MSE per forecast step",
    "forecast_spectra": "radial energy spectrum E(k) of each forecast against the truth's",
    "pareto": "test MSE against CPU latency, the Pareto front highlighted",
    "gap_closed": "gap closed per distilled student and method",
}


def gap_closed_by_seed(table: Any) -> dict[str, dict[tuple[str, str], list[float]]]:
    """``{"mse": {(student, method): [one value per seed]}, "mae": ...}`` of the table's
    finite ``gap_closed_mse`` / ``gap_closed_mae`` of the distilled students (a (student,
    method) with several rows, one per seed, gets several values). ``none`` is left out: it
    is the reference, 0 by definition."""
    out: dict[str, dict[tuple[str, str], list[float]]] = {"mse": {}, "mae": {}}
    for record in table.to_dict("records"):
        if record.get("role") != "student" or record.get("method") == BASELINE_METHOD:
            continue
        for metric in out:
            value = record.get(f"gap_closed_{metric}")
            if value is not None and math.isfinite(float(value)):
                key = (str(record["model"]), str(record["method"]))
                out[metric].setdefault(key, []).append(float(value))
    return out


def evaluation_figures(
    results: Sequence[Any],
    table: Any,
    *,
    dataset: str,
    truth: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    fields: TestPassFields | None = None,
    channels: Sequence[str] = (),
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
    panel_step: int = -1,
    panel_channel: int = 0,
    window_labels: Sequence[Any] | None = None,
    reference_teacher: str | None = None,
    latency_batch: int | None = None,
) -> dict[str, Any]:
    """The figures of ``FIGURES`` (same keys, same order) of one dataset's evaluation.

    ``predictions`` are keyed like ``ModelResult.key`` (``model/method``); ``fields`` are the
    spectra and truth range of the whole test split (without them the spectra figure says
    so and the panel's colormap follows the shown truth)."""
    styles = Styles.of(results)
    metas = list(channel_metadata or [])
    common = {"styles": styles, "channel_metadata": metas}
    cutoffs = results[0].metrics.band_cutoffs if results else ()
    spectra = {key: fields.spectrum(key) for key in fields.keys} if fields else {}
    channel_name = (list(channels) or ["0"])[panel_channel]
    meta = metas[panel_channel] if panel_channel < len(metas) else {"long_name": channel_name}
    value_range = None
    if fields is not None and fields.truth_min is not None:
        value_range = (
            float(fields.truth_min[panel_channel]),
            float(fields.truth_max[panel_channel]),
        )
    panel_title = f"{dataset}: test forecasts of {meta.get('long_name', channel_name)}"
    if "units" in meta:
        panel_title += f" {units_suffix(meta)}"
    return {
        "metrics_per_step": plot_step_curves(
            results, title=f"{dataset}: error per forecast step", **common
        ),
        "band_errors": plot_band_errors(
            results, title=f"{dataset}: error by wavenumber band", **common
        ),
        "predictions": plot_prediction_panel(
            truth,
            {series_label(r.role, r.model, r.method): predictions[r.key] for r in results},
            step=panel_step,
            channel=panel_channel,
            window_labels=window_labels,
            title=panel_title,
            value_range=value_range,
            channel_metadata=meta,
        ),
        "band_errors_by_lead": plot_band_errors_by_lead(
            results, title=f"{dataset}: band error against lead time", **common
        ),
        "forecast_spectra": plot_forecast_spectra(
            fields.k if fields else None,
            fields.spectrum(None) if fields else None,
            spectra,
            results,
            band_cutoffs=cutoffs,
            title=f"{dataset}: energy spectra of the forecasts, test split, all lead times",
            **common,
        ),
        "pareto": plot_pareto(
            results,
            batch_size=latency_batch,
            title=f"{dataset}: accuracy against latency",
            **common,
        ),
        "gap_closed": plot_gap_closed(
            gap_closed_by_seed(table),
            styles=styles,
            reference_teacher=reference_teacher,
            title=f"{dataset}: teacher-student gap closed by each method",
        ),
    }
