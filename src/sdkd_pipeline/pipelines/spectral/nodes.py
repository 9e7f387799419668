"""Spectral analysis nodes: thin glue over ``sdkd_pipeline.spectral_analysis``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import xarray as xr

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill.teachers import check_teacher_matches
from sdkd_pipeline.pipelines.forecaster import load_forecaster
from sdkd_pipeline.spectral_analysis import (
    SUMMARY_COLUMNS,
    SpectralConfig,
    analyse_spectra,
    spectral_metrics,
    summary_rows,
)
from sdkd_pipeline.tracking import MLflowTracker, flatten_params, run_tags
from sdkd_pipeline.training import resolve_device

logger = logging.getLogger(__name__)


def analyse_teacher_spectra(
    tensors: xr.Dataset,
    checkpoint: Mapping[str, Any],
    spectral_params: Mapping[str, Any],
    tracking: Mapping[str, Any],
    *,
    dataset: str,
    teacher: str,
) -> tuple[dict[str, Any], Any]:
    """Spectra of ``dataset``'s targets and of ``teacher``'s latents on the configured split,
    their slopes and the branch check; one MLflow run ``<dataset>/<teacher>/spectral``.

    Returns the JSON summary and the figure (log-log spectra with fitted and reference lines).
    """
    cfg = SpectralConfig.from_params(spectral_params, dataset)
    store = tensors.encoding.get("store_path") or tensors
    windows = WindowDataset(store, cfg.split)
    shape = {"in_frames": windows.t_in, "out_frames": windows.t_out,
             "channels": windows.shape[2], "height": windows.shape[3],
             "width": windows.shape[4]}
    check_teacher_matches(teacher, checkpoint, shape, windows.mean, windows.std)
    device = resolve_device(cfg.device)
    model = load_forecaster(dict(checkpoint)).to(device)
    analysis, figure = analyse_spectra(model, windows, cfg, title=f"{dataset} / {teacher}",
                                       device=device)
    summary: dict[str, Any] = {"dataset": dataset, "teacher": teacher,
                               "teacher_run_id": checkpoint.get("mlflow_run_id"), **analysis}

    tracking = dict(tracking or {})
    tags = run_tags(dataset, "teacher", teacher, "spectral")
    with MLflowTracker(experiment=tracking.get("experiment", "sdkd_pipeline"),
                       run_name=f"{dataset}/{teacher}/spectral", tags=tags) as tracker:
        summary["mlflow_run_id"] = tracker.run_id
        tracker.log_params(flatten_params({**tags, "spectral": cfg.to_dict(),
                                           "n_windows": summary["n_windows"],
                                           "high_band_cutoff_used":
                                               (summary["branch_check"] or {}).get("cutoff")}))
        tracker.log_metrics(spectral_metrics(summary))
        tracker.log_dict(summary, "spectra.json")
        tracker.log_figure(figure, "spectra.png")

    slopes = ", ".join(f"{name} {entry['slope']:.2f} ± {entry['slope_stderr']:.2f}"
                       for name, entry in summary["spectra"].items())
    logger.info("%s/%s spectral slopes: %s", dataset, teacher, slopes)
    if summary["branch_check"] is not None:
        logger.info("%s/%s: %s", dataset, teacher, summary["branch_check"]["verdict"])
    return summary, figure


def tabulate_spectra(**summaries: Mapping[str, Any]) -> pd.DataFrame:
    """All teachers' summaries of one dataset as one table (``SUMMARY_COLUMNS``)."""
    rows = [row for summary in summaries.values() for row in summary_rows(summary)]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
