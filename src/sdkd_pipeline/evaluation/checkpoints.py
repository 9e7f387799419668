"""One dataset, end to end: ``evaluate_checkpoints`` evaluates every teacher and student
checkpoint and the baselines on the test split and builds the paper's table, the per-step
curves and the figures (``plots.FIGURES``).

Imports only torch, numpy and pandas at module level (matplotlib inside the plotting
functions), so it runs without Kedro, MLflow, Zarr or Dask.

All models are evaluated in one pass (``accuracy``). Latency (``latency``) is measured once
per architecture (same class, configuration and weight shapes: the rows of one student trained
by several methods share it, as do their parameter and FLOP counts). The exported models'
latency is left blank (NaN) for a format that is unavailable, a model that is not exported
(teachers unless ``exported_teachers``) or an export that fails, with one log line saying why.
The baselines ``persistence`` and ``climatology`` (``baselines``) are evaluated in the same
pass and timed the same way; they have no parameters, no FLOPs counted and no export. A teacher
whose ``teacher_check`` (``tables``) is not ``ok`` is logged as a warning.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation.accuracy import _chosen_windows, _evaluate_pass, test_data_range
from sdkd_pipeline.evaluation.baselines import BASELINE_METHOD as BASELINE_ROW_METHOD
from sdkd_pipeline.evaluation.baselines import BASELINE_ROLE, build_baselines
from sdkd_pipeline.evaluation.config import EvaluationConfig
from sdkd_pipeline.evaluation.latency import _exported_latencies, _latencies
from sdkd_pipeline.evaluation.metrics import ForecastMetrics
from sdkd_pipeline.evaluation.plots import TestPassFields, evaluation_figures
from sdkd_pipeline.evaluation.plots.style import channel_metadata_of
from sdkd_pipeline.evaluation.tables import (
    BASELINE_METHOD,
    TEACHER_OK,
    TEACHER_UNCHECKED,
    ModelResult,
    _order,
    best_teacher,
    build_table,
    curves_json,
)

__all__ = ["Evaluation", "evaluate_checkpoints"]

logger = logging.getLogger(__name__)


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Evaluation:
    """What ``evaluate_checkpoints`` returns; ``figures`` as ``plots.FIGURES`` names them."""

    results: list[ModelResult]
    table: pd.DataFrame
    curves: dict[str, Any]
    figures: dict[str, Any]

    @property
    def step_figure(self) -> Any:
        return self.figures["metrics_per_step"]

    @property
    def band_figure(self) -> Any:
        return self.figures["band_errors"]

    @property
    def panel_figure(self) -> Any:
        return self.figures["predictions"]


def _architecture(model: str, module: torch.nn.Module, checkpoint: Mapping[str, Any]) -> Any:
    """What a forward pass costs depends on: the model's class, its configuration and the
    shapes of its weights (not their values). Rows that agree on it share one measurement."""
    try:
        config = json.dumps(checkpoint.get("model_config"), sort_keys=True, default=str)
    except (TypeError, ValueError):
        config = repr(checkpoint.get("model_config"))
    shapes = tuple(
        (name, tuple(value.shape), str(value.dtype)) for name, value in module.state_dict().items()
    )
    return (model, type(module).__module__, type(module).__qualname__, config, shapes)


def _warn_flagged_teachers(table: pd.DataFrame, dataset: str) -> None:
    """One warning per teacher whose ``teacher_check`` is not ``ok``, with the numbers."""
    mse = {(r["role"], r["model"], r["method"]): r["mse"] for r in table.to_dict("records")}
    compared = [
        f"{model}/{method} {value:.4g}"
        for (role, model, method), value in mse.items()
        if (role == BASELINE_ROLE and model == "persistence")
        or (role == "student" and method == BASELINE_METHOD)
    ]
    for record in table[table["role"] == "teacher"].to_dict("records"):
        verdict = record["teacher_check"]
        if verdict in (TEACHER_OK, TEACHER_UNCHECKED):
            continue
        logger.warning(
            "%s: teacher %s may not be worth distilling: %s (test MSE %.4g; %s)",
            dataset,
            record["model"],
            verdict,
            record["mse"],
            ", ".join(compared),
        )


def _checkpoint_results(
    entries: Sequence[tuple[str, str, str, torch.nn.Module, Mapping[str, Any]]],
    metrics: Mapping[str, ForecastMetrics],
    sample_shape: Sequence[int],
    cfg: EvaluationConfig,
    formats: Sequence[str],
    onnx_note: str | None,
    count_params: Callable[[torch.nn.Module], int],
    count_flops: Callable[[torch.nn.Module, Sequence[int]], int],
) -> tuple[list[ModelResult], list[str]]:
    """One row per entry of ``evaluate_checkpoints`` with its counts and latencies, measured
    once per architecture, and the exports that failed (``"<key> (<format>: <why>)"``)."""
    # one measurement per architecture: {key: (params, flops, cpu, cuda, exported)}
    measured: dict[Any, tuple[int, int, dict, dict, dict]] = {}
    failures: list[str] = []
    results = []
    with tempfile.TemporaryDirectory(prefix="sdkd-eval-export-") as tmp:
        for role, model, method, module, checkpoint in entries:
            key = f"{model}/{method}"
            module = module.cpu()
            arch = _architecture(model, module, checkpoint)
            export = formats if (role != "teacher" or cfg.exported_teachers) else []
            if arch not in measured:
                latency, latency_cuda = _latencies(module, sample_shape, cfg)
                measured[arch] = (
                    count_params(module),
                    count_flops(module, sample_shape),
                    latency,
                    latency_cuda,
                    {},
                )
            params, flops, latency, latency_cuda, exported = measured[arch]
            todo = [f for f in export if f not in exported and not (f == "onnx" and onnx_note)]
            if todo:
                done, failed = _exported_latencies(
                    checkpoint,
                    todo,
                    Path(tmp),
                    f"{len(results)}_{model}_{method}",
                    cfg,
                    sample_shape,
                )
                exported.update(done)
                failures += [f"{key} ({fmt}: {why})" for fmt, why in failed.items()]
            result = ModelResult(
                role=role,
                model=model,
                method=method,
                metrics=metrics[key],
                params=params,
                flops=flops,
                latency_ms=dict(latency),
                latency_cuda_ms=dict(latency_cuda),
                latency_exported_ms={f: dict(exported.get(f, {})) for f in export},
                best_val_loss=_float_or_nan(checkpoint.get("best_val_loss")),
            )
            results.append(result)
    return results, failures


def _baseline_results(
    references: Mapping[str, torch.nn.Module],
    metrics: Mapping[str, ForecastMetrics],
    sample_shape: Sequence[int],
    cfg: EvaluationConfig,
) -> list[ModelResult]:
    """One row per baseline, timed like the models (no parameters, FLOPs or exports)."""
    results = []
    for name, module in references.items():
        latency, latency_cuda = _latencies(module, sample_shape, cfg)
        results.append(
            ModelResult(
                role=BASELINE_ROLE,
                model=name,
                method=BASELINE_ROW_METHOD,
                metrics=metrics[f"{name}/{BASELINE_ROW_METHOD}"],
                params=0,
                flops=0,
                latency_ms=dict(latency),
                latency_cuda_ms=dict(latency_cuda),
            )
        )
    return results


def evaluate_checkpoints(
    entries: Sequence[tuple[str, str, str, torch.nn.Module, Mapping[str, Any]]],
    windows: Any,
    cfg: EvaluationConfig,
    *,
    dataset: str,
    teachers: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    count_params: Callable[[torch.nn.Module], int] | None = None,
    count_flops: Callable[[torch.nn.Module, Sequence[int]], int] | None = None,
    latitudes: Any = None,
) -> Evaluation:
    """Evaluate ``entries`` = ``(role, model, method, module, checkpoint)`` on ``windows``
    (the test split) and build the table, curves and figures.

    The exported latency needs full checkpoints (as ``train_forecaster`` writes them); an
    entry whose checkpoint cannot be exported gets blank exported-latency cells. The baselines
    of ``cfg.baselines`` are built from ``windows`` (``baselines.build_baselines``: the
    climatology from the training split of the same store) and get rows of their own; a
    teacher whose ``teacher_check`` is not ``ok`` is logged as a warning. ``latitudes`` (one
    per grid row, degrees) adds the latitude-weighted MSE / RMSE columns.

    It is long because it is the evaluation's sequence of steps in order (one pass, the rows,
    the table, the curves, the figures), each step done by a helper.
    """
    from sdkd_pipeline.devices import resolve_device
    from sdkd_pipeline.models.complexity import count_flops as default_flops
    from sdkd_pipeline.models.complexity import count_parameters as default_params

    count_params = count_params or default_params
    count_flops = count_flops or default_flops
    device = resolve_device(cfg.device, param="evaluate.device")
    data_range = test_data_range(windows, cfg.batch_size)
    modules = {f"{model}/{method}": module for _, model, method, module, _ in entries}
    references = build_baselines(windows, cfg.baselines, climatology=cfg.climatology)
    for name, module in references.items():
        key = f"{name}/{BASELINE_ROW_METHOD}"
        if key in modules:
            raise ConfigError(f"evaluate_checkpoints: a checkpoint is named like baseline {key}")
        modules[key] = module
    fields = TestPassFields()  # the figures' spectra and truth range, from the same pass
    metrics, truth, predictions = _evaluate_pass(
        modules,
        windows,
        data_range,
        batch_size=cfg.batch_size,
        device=device,
        keep=cfg.panel_windows or (0,),
        observe=fields.observe,
        ssim_convention=cfg.ssim_convention,
        latitudes=latitudes,
    )
    x0, _ = windows[0]
    sample_shape = tuple(int(s) for s in x0.shape)

    formats = list(cfg.exported_formats)
    onnx_note = None
    if "onnx" in formats:
        from sdkd_pipeline.deploy import onnx_missing

        onnx_note = onnx_missing()
        if onnx_note:
            logger.info("%s: ONNX latency columns left blank: %s", dataset, onnx_note)
    results, failures = _checkpoint_results(
        entries, metrics, sample_shape, cfg, formats, onnx_note, count_params, count_flops
    )
    results += _baseline_results(references, metrics, sample_shape, cfg)
    if failures:
        logger.warning("%s: exported latency left blank for %s", dataset, "; ".join(failures))
    results = _order(results, teachers, students, methods)
    table = build_table(
        results,
        teachers=teachers,
        students=students,
        methods=methods,
        batch_sizes=cfg.batch_sizes,
        teacher_min_ratio=cfg.teacher_min_ratio,
    )
    _warn_flagged_teachers(table, dataset)
    reference = best_teacher(results)
    curves = curves_json(
        results,
        dataset=dataset,
        data_range=data_range,
        channels=getattr(windows, "channels", []),
        extra={
            "split": "test",
            "n_windows": len(windows),
            "ssim_convention": cfg.ssim_convention,
            "gap_reference_teacher": reference.model if reference else None,
            "baselines": {name: module.describe() for name, module in references.items()},
            "teacher_check": {"min_ratio": cfg.teacher_min_ratio},
            "latency": {
                "threads": cfg.threads,
                "repeats": cfg.repeats,
                "warmup": cfg.warmup,
                "max_seconds": cfg.max_seconds,
                "batch_sizes": list(cfg.batch_sizes),
                "exported_formats": formats,
                "exported_teachers": cfg.exported_teachers,
                "onnx_unavailable": onnx_note,
            },
        },
    )
    figures = evaluation_figures(
        results,
        table,
        dataset=dataset,
        truth=truth,
        predictions=predictions,
        fields=fields,
        channels=list(getattr(windows, "channels", None) or []),
        channel_metadata=channel_metadata_of(windows),
        panel_step=cfg.panel_step,
        window_labels=_chosen_windows(windows, cfg.panel_windows),
        reference_teacher=reference.model if reference else None,
        latency_batch=min(cfg.batch_sizes),
    )
    return Evaluation(results=results, table=table, curves=curves, figures=figures)
