"""Spectral analysis nodes: thin glue over ``sdkd_pipeline.spectral.analysis``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import xarray as xr

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.distill.teachers import check_teacher_matches
from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.spectral.analysis import (
    SUMMARY_COLUMNS,
    SpectralConfig,
    analyse_spectra,
    band_share_text,
    spectral_metrics,
    summary_rows,
)
from sdkd_pipeline.tracking import DEFAULT_EXPERIMENT, MLflowTracker, flatten_params, run_tags

logger = logging.getLogger(__name__)


def analyse_teacher_spectra(
    tensors: xr.Dataset,
    checkpoint: Mapping[str, Any],
    spectral_params: Mapping[str, Any],
    tracking: Mapping[str, Any],
    distill_params: Mapping[str, Any] | None = None,
    *,
    dataset: str,
    teacher: str,
) -> tuple[dict[str, Any], Any]:
    """Spectra of ``dataset``'s targets and of ``teacher``'s latents on the configured split,
    their fits and power-law verdicts, the branch check, and the band shares of the targets and
    of the teacher's error (also above ``distill.cutoff.k``); one MLflow run
    ``<dataset>/<teacher>/spectral``.

    Returns the JSON summary and the figure (log-log spectra with fitted and reference lines).
    """
    cfg = SpectralConfig.from_params(
        spectral_params, dataset, distill_cutoff=_distill_cutoff_k(distill_params)
    )
    store = tensors.encoding.get("store_path") or tensors
    windows = WindowDataset(store, cfg.split)
    checkpoint = Checkpoint.of(checkpoint, origin=f"teacher {teacher!r}").expect_model(teacher)
    check_teacher_matches(teacher, checkpoint, windows.model_shape, windows.mean, windows.std)
    device = resolve_device(cfg.device, param="spectral.device")
    model = checkpoint.build_model().to(device)
    analysis, figure = analyse_spectra(
        model, windows, cfg, title=f"{dataset} / {teacher}", device=device
    )
    summary: dict[str, Any] = {
        "dataset": dataset,
        "teacher": teacher,
        "teacher_run_id": checkpoint.get("mlflow_run_id"),
        **analysis,
    }

    tracking = dict(tracking or {})
    tags = run_tags(dataset, "teacher", teacher, "spectral")
    with MLflowTracker(
        experiment=tracking.get("experiment", DEFAULT_EXPERIMENT),
        run_name=f"{dataset}/{teacher}/spectral",
        tags=tags,
    ) as tracker:
        summary["mlflow_run_id"] = tracker.run_id
        tracker.log_params(
            flatten_params(
                {
                    **tags,
                    "spectral": cfg.to_dict(),
                    "n_windows": summary["n_windows"],
                    "high_band_cutoff_used": (summary["branch_check"] or {}).get("cutoff"),
                }
            )
        )
        tracker.log_metrics(spectral_metrics(summary))
        tracker.log_dict(summary, "spectra.json")
        tracker.log_figure(figure, "spectra.png")

    verdicts = "; ".join(f"{name} {entry['verdict']}" for name, entry in summary["spectra"].items())
    logger.info("%s/%s spectra: %s", dataset, teacher, verdicts)
    logger.info("%s/%s %s", dataset, teacher, band_share_text(summary["band_shares"]))
    if summary["branch_check"] is not None:
        logger.info("%s/%s: %s", dataset, teacher, summary["branch_check"]["verdict"])
    return summary, figure


def _distill_cutoff_k(distill_params: Mapping[str, Any] | None) -> Any:
    """``distill.cutoff.k`` (validated by ``SpectralConfig``), or None without a distill
    section. In ``energy`` mode the runs choose k_c from the teachers' spectra; the shares are
    still reported above the fixed ``k`` (default 4, as ``DistillConfig``)."""
    if not distill_params:
        return None
    cutoff = distill_params.get("cutoff") or {}
    if not isinstance(cutoff, Mapping):
        return None
    if cutoff.get("mode", "fixed") != "fixed":
        logger.info(
            "distill.cutoff.mode is %r: band shares above the fixed distill.cutoff.k",
            cutoff.get("mode"),
        )
    return cutoff.get("k", 4.0)


def tabulate_spectra(**summaries: Mapping[str, Any]) -> pd.DataFrame:
    """All teachers' summaries of one dataset as one table (``SUMMARY_COLUMNS``): ``power_law``
    as 1 / 0 (blank on the ``teacher_error`` rows), ``slope`` blank unless a power law."""
    rows = [row for summary in summaries.values() for row in summary_rows(summary)]
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    table["power_law"] = table["power_law"].astype("Int64")
    return table
