"""Evaluation of trained teachers and students on the test split, the paper's table: ``metrics``
defines every metric (``ForecastMetrics``, the streaming ``MetricAccumulator``,
``gap_closed``); ``baselines`` the reference forecasters (persistence, climatology);
``accuracy`` runs every model over the test split in one streamed pass; ``latency`` holds the
one timing loop (``timed_calls``, also used by ``deploy``) and the latency measurements;
``config`` the ``evaluate`` parameters (``EvaluationConfig``); ``tables`` the table's rows,
gap closed, the teacher check, Markdown, curves JSON and MLflow metrics; ``plots`` the
figures; ``checkpoints`` ties them together for one dataset (``evaluate_checkpoints``). The
names below are re-exported from those modules and loaded on first use, so that importing
one light submodule (``deploy`` imports ``evaluation.latency``) does not import pandas and
torchmetrics; nothing here imports Kedro, MLflow, Zarr or Dask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS = {
    "EvaluationConfig": "config",
    "EXPORT_FORMATS": "config",
    "TEACHER_MIN_RATIO": "config",
    "evaluate_models": "accuracy",
    "predict_windows": "accuracy",
    "test_data_range": "accuracy",
    "measure_latency": "latency",
    "timed_calls": "latency",
    "BASELINE_METHOD": "tables",
    "BAND_COLUMNS": "tables",
    "METRIC_COLUMNS": "tables",
    "TEACHER_OK": "tables",
    "TEACHER_UNCHECKED": "tables",
    "ModelResult": "tables",
    "best_teacher": "tables",
    "build_table": "tables",
    "compact_markdown": "tables",
    "compact_table": "tables",
    "curves_json": "tables",
    "table_metrics": "tables",
    "teacher_check": "tables",
    "to_markdown": "tables",
    "FIGURES": "plots",
    "pareto_front": "plots",
    "plot_band_errors": "plots",
    "plot_band_errors_by_lead": "plots",
    "plot_forecast_spectra": "plots",
    "plot_gap_closed": "plots",
    "plot_pareto": "plots",
    "plot_prediction_panel": "plots",
    "plot_step_curves": "plots",
    "Evaluation": "checkpoints",
    "evaluate_checkpoints": "checkpoints",
}

__all__ = [
    "BAND_COLUMNS",
    "BASELINE_METHOD",
    "EXPORT_FORMATS",
    "Evaluation",
    "FIGURES",
    "EvaluationConfig",
    "METRIC_COLUMNS",
    "ModelResult",
    "TEACHER_MIN_RATIO",
    "TEACHER_OK",
    "TEACHER_UNCHECKED",
    "best_teacher",
    "build_table",
    "compact_markdown",
    "compact_table",
    "curves_json",
    "evaluate_checkpoints",
    "evaluate_models",
    "measure_latency",
    "pareto_front",
    "plot_band_errors",
    "plot_band_errors_by_lead",
    "plot_forecast_spectra",
    "plot_gap_closed",
    "plot_pareto",
    "plot_prediction_panel",
    "plot_step_curves",
    "predict_windows",
    "table_metrics",
    "teacher_check",
    "test_data_range",
    "timed_calls",
    "to_markdown",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from sdkd_pipeline.evaluation.accuracy import evaluate_models, predict_windows, test_data_range
    from sdkd_pipeline.evaluation.checkpoints import Evaluation, evaluate_checkpoints
    from sdkd_pipeline.evaluation.config import EXPORT_FORMATS, TEACHER_MIN_RATIO, EvaluationConfig
    from sdkd_pipeline.evaluation.latency import measure_latency, timed_calls
    from sdkd_pipeline.evaluation.plots import (
        FIGURES,
        pareto_front,
        plot_band_errors,
        plot_band_errors_by_lead,
        plot_forecast_spectra,
        plot_gap_closed,
        plot_pareto,
        plot_prediction_panel,
        plot_step_curves,
    )
    from sdkd_pipeline.evaluation.tables import (
        BAND_COLUMNS,
        BASELINE_METHOD,
        METRIC_COLUMNS,
        TEACHER_OK,
        TEACHER_UNCHECKED,
        ModelResult,
        best_teacher,
        build_table,
        compact_markdown,
        compact_table,
        curves_json,
        table_metrics,
        teacher_check,
        to_markdown,
    )
