"""Evaluation of trained teachers and students on the test split: the paper's table.

Imports only torch, numpy and pandas at module level (matplotlib inside the plotting
functions), so it runs without Kedro, MLflow, Zarr or Dask.

Every accuracy metric is computed by ``metrics.MetricAccumulator`` on de-normalized fields,
streamed over the test loader (the split is never held in memory), with the models in eval
mode under ``torch.no_grad``; every model's predictions are computed once, in that pass (the
prediction panel's windows are kept from it). PSNR and SSIM use one explicit data range per
channel, ``max - min`` of the test split's truth, computed once per dataset
(``test_data_range``) and used for every model. Latency is the median of ``repeats`` timed
forward calls after ``warmup`` calls (at least 3 when they take over ``max_seconds``
together), on the CPU with ``threads`` torch threads (CUDA too when
available), per batch size, measured once per architecture (same class, configuration and
weight shapes: the rows of one student trained by several methods share it, as do their
parameter and FLOP counts); a student's speedup over a teacher is the teacher's latency divided
by the student's. The exported models' latency (``exported_formats``: TorchScript, and ONNX
through onnxruntime when onnx and onnxruntime import) is timed the same way by
``deploy.exported_latency`` on files exported to a temporary directory; it is left blank (NaN)
for a format that is unavailable, a model that is not exported (teachers unless
``exported_teachers``) or an export that fails, with one log line saying why. The share
of the teacher-student gap a distilled student closes is ``metrics.gap_closed`` on test MSE and
MAE, with the student trained by method ``none`` as the baseline and the teacher with the lowest
validation MSE (the checkpoint's ``best_val_loss``) as the reference.

Reference rows (role ``baseline``, method ``baseline``): ``persistence`` and ``climatology``
from ``sdkd_pipeline.baselines``, evaluated in the same pass (the climatology gets the indices
of the batch's windows, see there) and timed the same way; they have no parameters, no FLOPs
counted and no export, and are never the reference teacher. ``gap_closed_vs_persistence_mse``
is ``metrics.gap_closed`` with persistence in place of ``none``. ``teacher_check`` says whether
a teacher is worth distilling: its test MSE below persistence's and at most
``none_mse / teacher_min_ratio`` for every student whose ``none`` row exists.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from sdkd_pipeline.baselines import BASELINE_METHOD as BASELINE_ROW_METHOD
from sdkd_pipeline.baselines import BASELINE_NAMES, BASELINE_ROLE, build_baselines
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.latency import timed_calls
from sdkd_pipeline.metrics import (
    BAND_NAMES,
    ForecastMetrics,
    MetricAccumulator,
    data_range_from,
    gap_closed,
)

__all__ = [
    "BASELINE_METHOD",
    "EXPORT_FORMATS",
    "EvaluationConfig",
    "ModelResult",
    "build_table",
    "curves_json",
    "evaluate_models",
    "measure_latency",
    "plot_band_errors",
    "plot_prediction_panel",
    "plot_step_curves",
    "predict_windows",
    "table_metrics",
    "teacher_check",
    "test_data_range",
    "to_markdown",
]

BASELINE_METHOD = "none"
METRIC_COLUMNS = ("mse", "mae", "rmse", "psnr", "ssim")
BAND_COLUMNS = tuple(f"band_mse_{band}" for band in BAND_NAMES)
EXPORT_FORMATS = ("torchscript", "onnx")
TEACHER_MIN_RATIO = 1.5
TEACHER_OK = "ok"
TEACHER_UNCHECKED = "not checked (no persistence or none row)"

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluate`` parameters (see ``conf/base/parameters_evaluate.yml``)."""

    batch_size: int = 16
    threads: int = 1
    repeats: int = 5
    warmup: int = 1
    batch_sizes: tuple[int, ...] = (1, 32)
    panel_windows: tuple[int, ...] = (0,)
    panel_step: int = -1
    device: str = "auto"
    cuda_latency: bool = True
    max_seconds: float | None = 2.0
    exported_formats: tuple[str, ...] = EXPORT_FORMATS
    exported_teachers: bool = False
    baselines: tuple[str, ...] = BASELINE_NAMES
    teacher_min_ratio: float = TEACHER_MIN_RATIO

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> EvaluationConfig:
        params = dict(params or {})
        latency = dict(params.get("latency") or {})
        panels = dict(params.get("panels") or {})

        def positive(value: Any, name: str, minimum: int = 1) -> int:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < minimum
            ):
                raise ConfigError(
                    f"parameter evaluate.{name} must be an integer >= {minimum}, got {value!r}"
                )
            return int(value)

        sizes = latency.get("batch_sizes", [1, 32])
        sizes = [sizes] if isinstance(sizes, int) else list(sizes)
        if not sizes:
            raise ConfigError("parameter evaluate.latency.batch_sizes must not be empty")
        windows = panels.get("windows", [0])
        windows = [windows] if isinstance(windows, int) else list(windows or [])
        step = panels.get("step", -1)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ConfigError(f"parameter evaluate.panels.step must be an integer, got {step!r}")
        exported = params.get("exported_latency", {})
        if exported is None or exported is False:
            exported = {"formats": []}
        if not isinstance(exported, Mapping):
            raise ConfigError(
                "parameter evaluate.exported_latency must be a mapping such as "
                f"{{formats: [torchscript, onnx]}}, got {exported!r}"
            )
        formats = exported.get("formats", list(EXPORT_FORMATS))
        formats = [formats] if isinstance(formats, str) else list(formats or [])
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ConfigError(
                f"parameter evaluate.exported_latency.formats: unknown format(s) "
                f"{unknown}; choose from {list(EXPORT_FORMATS)} ([] disables)"
            )
        max_seconds = latency.get("max_seconds", 2.0)
        if max_seconds is not None and (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, (int, float))
            or not max_seconds > 0
        ):
            raise ConfigError(
                "parameter evaluate.latency.max_seconds must be a positive number "
                f"or null, got {max_seconds!r}"
            )
        teachers = exported.get("teachers", False)
        if not isinstance(teachers, bool):
            raise ConfigError(
                "parameter evaluate.exported_latency.teachers must be true or "
                f"false, got {teachers!r}"
            )
        names = params.get("baselines", list(BASELINE_NAMES))
        names = [names] if isinstance(names, str) else list(names or [])
        unknown = [n for n in names if n not in BASELINE_NAMES]
        if unknown:
            raise ConfigError(
                f"parameter evaluate.baselines: unknown baseline(s) {unknown}; choose from "
                f"{list(BASELINE_NAMES)} ([] disables)"
            )
        check = params.get("teacher_check") or {}
        if not isinstance(check, Mapping):
            raise ConfigError(
                "parameter evaluate.teacher_check must be a mapping such as {min_ratio: 1.5}, "
                f"got {check!r}"
            )
        ratio = check.get("min_ratio", TEACHER_MIN_RATIO)
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not math.isfinite(ratio)
            or ratio < 1
        ):
            raise ConfigError(
                "parameter evaluate.teacher_check.min_ratio must be a number >= 1 (how many "
                f"times lower than a student's `none` MSE a teacher's must be), got {ratio!r}"
            )
        return cls(
            batch_size=positive(params.get("batch_size", 16), "batch_size"),
            threads=positive(latency.get("threads", 1), "latency.threads"),
            repeats=positive(latency.get("repeats", 5), "latency.repeats"),
            warmup=positive(latency.get("warmup", 1), "latency.warmup", 0),
            batch_sizes=tuple(positive(b, "latency.batch_sizes") for b in sizes),
            panel_windows=tuple(positive(w, "panels.windows", 0) for w in windows),
            panel_step=int(step),
            device=str(params.get("device", "auto")),
            cuda_latency=bool(latency.get("cuda", True)),
            max_seconds=None if max_seconds is None else float(max_seconds),
            exported_formats=tuple(f for f in EXPORT_FORMATS if f in formats),
            exported_teachers=teachers,
            baselines=tuple(n for n in BASELINE_NAMES if n in names),
            teacher_min_ratio=float(ratio),
        )


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------


def _loader(windows: Any, batch_size: int) -> DataLoader:
    return DataLoader(windows, batch_size=batch_size, shuffle=False, num_workers=0)


def test_data_range(windows: Any, batch_size: int = 16) -> torch.Tensor:
    """``max - min`` of each channel over the de-normalized truth of ``windows`` (streamed)."""
    return data_range_from(
        (windows.denormalize(y) for _, y in _loader(windows, batch_size)),
        channel_names=getattr(windows, "channels", None),
    )


test_data_range.__test__ = False  # not a pytest test, whatever its name


def _forward(
    model: torch.nn.Module, x: torch.Tensor, window_index: torch.Tensor | None = None
) -> torch.Tensor:
    """``model(x)`` as a float tensor; a module with ``uses_window_index`` (the climatology)
    also gets the indices of the batch's windows in the split."""
    if window_index is not None and getattr(model, "uses_window_index", False):
        out = model(x, window_index=window_index)
    else:
        out = model(x)
    if isinstance(out, Mapping):
        out = out["prediction"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    return out.float()


def evaluate_models(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    data_range: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> dict[str, ForecastMetrics]:
    """Metrics of each model on ``windows`` (a WindowDataset: normalized ``(x, y)`` items and
    ``denormalize``), in one streamed pass over the loader; every model sees each batch."""
    metrics, _, _ = _evaluate_pass(
        models, windows, data_range, batch_size=batch_size, device=device
    )
    return metrics


def _chosen_windows(windows: Any, indices: Iterable[int]) -> list[int]:
    return [i for i in indices if 0 <= i < len(windows)] or [0]


def _evaluate_pass(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    data_range: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    keep: Iterable[int] = (),
) -> tuple[dict[str, ForecastMetrics], torch.Tensor | None, dict[str, torch.Tensor]]:
    """``evaluate_models``, also keeping the de-normalized truth ``(K, T, C, H, W)`` and each
    model's prediction of windows ``keep`` (as ``predict_windows`` picks them; ``None`` and
    ``{}`` when ``keep`` is empty), so the panel needs no second forward pass."""
    if not models:
        raise ConfigError("evaluate_models: no model to evaluate")
    device = torch.device(device)
    x0, y0 = windows[0]
    steps, channels, height, width = (int(s) for s in y0.shape)
    accumulators = {
        name: MetricAccumulator(channels, steps, height, width, data_range) for name in models
    }
    keep = list(keep)
    chosen = _chosen_windows(windows, keep) if keep else []
    kept_truth: dict[int, torch.Tensor] = {}
    kept: dict[str, dict[int, torch.Tensor]] = {name: {} for name in models}
    states = {}
    for name, model in models.items():
        states[name] = model.training
        model.to(device).eval()
    try:
        with torch.no_grad():
            start = 0
            for x, y in _loader(windows, batch_size):
                x = x.to(device)
                truth = windows.denormalize(y.to(device))
                rows = {i: i - start for i in chosen if start <= i < start + len(x)}
                for i, row in rows.items():
                    kept_truth[i] = truth[row].cpu()
                index = torch.arange(start, start + len(x))
                for name, model in models.items():
                    prediction = windows.denormalize(_forward(model, x, index))
                    accumulators[name].update(prediction, truth)
                    for i, row in rows.items():
                        kept[name][i] = prediction[row].cpu()
                start += len(x)
    finally:
        for name, model in models.items():
            model.train(states[name])
    metrics = {name: acc.compute() for name, acc in accumulators.items()}
    if not chosen:
        return metrics, None, {}
    truth = torch.stack([kept_truth[i] for i in chosen])
    predictions = {name: torch.stack([kept[name][i] for i in chosen]) for name in models}
    return metrics, truth, predictions


def predict_windows(
    models: Mapping[str, torch.nn.Module],
    windows: Any,
    indices: Iterable[int],
    *,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """De-normalized truth ``(K, T, C, H, W)`` and each model's prediction for windows
    ``indices`` (out-of-range indices are dropped; at least window 0 is used)."""
    device = torch.device(device)
    chosen = _chosen_windows(windows, indices)
    xs, ys = zip(*(windows[i] for i in chosen), strict=True)
    x = torch.stack(xs).to(device)
    truth = windows.denormalize(torch.stack(ys))
    predictions = {}
    with torch.no_grad():
        for name, model in models.items():
            was = model.training
            model.to(device).eval()
            index = torch.as_tensor(chosen, dtype=torch.long)
            predictions[name] = windows.denormalize(_forward(model, x, index)).cpu()
            model.train(was)
    return truth, predictions


# ---------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: torch.nn.Module,
    sample_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 32),
    *,
    repeats: int = 5,
    warmup: int = 2,
    threads: int | None = 1,
    device: str | torch.device = "cpu",
    max_seconds: float | None = None,
) -> dict[int, float]:
    """Median forward latency in milliseconds per batch size, for inputs ``(B, *sample_shape)``.

    On the CPU torch runs with ``threads`` threads (restored afterwards); on CUDA every call is
    synchronized. The model is timed in eval mode under ``torch.no_grad``. With
    ``max_seconds``, the timed calls of a batch size stop early, after at least 3 of them, once
    they have taken that long together (a slow model's calls are long and steady enough that
    the median of 3 is as good as that of more).
    """
    device = torch.device(device)
    if repeats < 1:
        raise ConfigError(f"measure_latency: repeats must be >= 1, got {repeats}")
    old_threads = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(int(threads))
    was = model.training
    model.to(device).eval()
    out: dict[int, float] = {}
    try:
        with torch.no_grad():
            for batch in batch_sizes:
                x = torch.randn((int(batch), *(int(s) for s in sample_shape)), device=device)
                times = timed_calls(lambda x=x: model(x), repeats=repeats, warmup=warmup,
                                    max_seconds=max_seconds, sync=lambda: _sync(device))
                out[int(batch)] = statistics.median(times) * 1e3
    finally:
        model.train(was)
        torch.set_num_threads(old_threads)
    return out


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelResult:
    """One evaluated checkpoint: who it is, its metrics, its cost."""

    role: str
    model: str
    method: str
    metrics: ForecastMetrics
    params: int
    flops: int
    latency_ms: dict[int, float] = field(default_factory=dict)
    latency_cuda_ms: dict[int, float] = field(default_factory=dict)
    # format (torchscript, onnx) -> batch size -> ms; {} for a format tried but unavailable
    latency_exported_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    best_val_loss: float = math.nan

    @property
    def key(self) -> str:
        return f"{self.model}/{self.method}"


def _order(
    results: Iterable[ModelResult],
    teachers: Sequence[str] | None,
    students: Sequence[str] | None,
    methods: Sequence[str] | None,
) -> list[ModelResult]:
    def rank(names: Sequence[str] | None, value: str) -> tuple[int, str]:
        names = list(names or [])
        return (names.index(value), "") if value in names else (len(names), value)

    rows = list(results)
    teacher_rows = sorted(
        (r for r in rows if r.role == "teacher"), key=lambda r: rank(teachers, r.model)
    )
    baseline_rows = sorted(
        (r for r in rows if r.role == BASELINE_ROLE), key=lambda r: rank(BASELINE_NAMES, r.model)
    )
    student_rows = sorted(
        (r for r in rows if r.role not in ("teacher", BASELINE_ROLE)),
        key=lambda r: (rank(students, r.model), rank(methods, r.method)),
    )
    return teacher_rows + baseline_rows + student_rows


def best_teacher(results: Iterable[ModelResult]) -> ModelResult | None:
    """The teacher with the lowest validation MSE (``best_val_loss``), or None (a baseline
    row is never one)."""
    teachers = [r for r in results if r.role == "teacher" and math.isfinite(r.best_val_loss)]
    return min(teachers, key=lambda r: r.best_val_loss) if teachers else None


def teacher_check(
    teacher_mse: float,
    persistence_mse: float | None,
    none_mse: Mapping[str, float],
    min_ratio: float = TEACHER_MIN_RATIO,
) -> str:
    """``"ok"`` when a teacher's test MSE is below persistence's and at most
    ``none_mse / min_ratio`` of every student in ``none_mse`` (its ``none`` row's MSE); else
    the reasons, ``"; "``-joined: ``not below persistence``, ``not <min_ratio>x below none of
    <student>``. A non-finite teacher MSE fails every check; a non-finite comparison value is
    skipped. ``TEACHER_UNCHECKED`` when there is nothing to compare with."""
    reasons = []
    checked = False
    if persistence_mse is not None and math.isfinite(persistence_mse):
        checked = True
        if not teacher_mse < persistence_mse:
            reasons.append("not below persistence")
    for student, mse in none_mse.items():
        if mse is None or not math.isfinite(mse):
            continue
        checked = True
        if not teacher_mse <= mse / min_ratio:
            reasons.append(f"not {min_ratio:g}x below none of {student}")
    if not checked:
        return TEACHER_UNCHECKED
    return "; ".join(reasons) or TEACHER_OK


def build_table(
    results: Iterable[ModelResult],
    *,
    teachers: Sequence[str] | None = None,
    students: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 32),
    teacher_min_ratio: float = TEACHER_MIN_RATIO,
) -> pd.DataFrame:
    """The paper's layout: teachers first, then the baselines (persistence, climatology), then
    students grouped by student, methods in ``methods`` order (anything unlisted after the
    listed ones, by name).

    Columns: role, model, method, params, gflops, mse, mae, rmse, psnr, ssim,
    band_mse_low/mid/high, latency_ms_b<B> per batch size (CPU), latency_cuda_ms_b<B> when CUDA
    was timed, latency_torchscript_ms_b<B> and latency_onnx_ms_b<B> (the exported model on the
    CPU) for each format any row tried (blank where a row has no number),
    speedup_vs_<teacher>_b<B> (teacher latency / this row's, CPU), gap_closed_mse,
    gap_closed_mae (students only: NaN for teachers and baselines, for every row when the
    baseline ``none`` of that student or any teacher is missing, and when the baseline already
    beats the reference teacher on that metric: then there is no gap to close),
    gap_closed_vs_persistence_mse (the same with the persistence row in place of ``none``),
    teacher_check (teachers: ``teacher_check``'s verdict with ``teacher_min_ratio``; "" for
    the other rows).
    """
    rows = _order(results, teachers, students, methods)
    teacher_rows = [r for r in rows if r.role == "teacher"]
    reference = best_teacher(rows)
    unaided = {r.model: r for r in rows if r.role == "student" and r.method == BASELINE_METHOD}
    persistence = next(
        (r for r in rows if r.role == BASELINE_ROLE and r.model == "persistence"), None
    )

    def share(r: ModelResult, name: str, baseline: ModelResult | None) -> float:
        # errors: only a teacher better than the baseline leaves a gap to close (a student
        # that beats its teacher unaided gets NaN, not a misleading share)
        if (
            r.role != "student"
            or baseline is None
            or reference is None
            or not getattr(reference.metrics, name) < getattr(baseline.metrics, name)
        ):
            return math.nan
        return gap_closed(
            getattr(r.metrics, name),
            getattr(baseline.metrics, name),
            getattr(reference.metrics, name),
        )

    with_cuda = any(r.latency_cuda_ms for r in rows)
    exported = [f for f in EXPORT_FORMATS if any(f in r.latency_exported_ms for r in rows)]
    exported_columns = [f"latency_{f}_ms_b{b}" for f in exported for b in batch_sizes]
    records = []
    for r in rows:
        record: dict[str, Any] = {
            "role": r.role,
            "model": r.model,
            "method": r.method,
            "params": int(r.params),
            "gflops": r.flops / 1e9,
            **{name: getattr(r.metrics, name) for name in METRIC_COLUMNS},
            **{f"band_mse_{band}": r.metrics.band_mse[band] for band in BAND_NAMES},
        }
        for b in batch_sizes:
            record[f"latency_ms_b{b}"] = r.latency_ms.get(b, math.nan)
        if with_cuda:
            for b in batch_sizes:
                record[f"latency_cuda_ms_b{b}"] = r.latency_cuda_ms.get(b, math.nan)
        for f in exported:
            for b in batch_sizes:
                record[f"latency_{f}_ms_b{b}"] = r.latency_exported_ms.get(f, {}).get(b, math.nan)
        for t in teacher_rows:
            for b in batch_sizes:
                mine, theirs = r.latency_ms.get(b, math.nan), t.latency_ms.get(b, math.nan)
                record[f"speedup_vs_{t.model}_b{b}"] = theirs / mine if mine > 0 else math.nan
        for name in ("mse", "mae"):
            record[f"gap_closed_{name}"] = share(r, name, unaided.get(r.model))
        record["gap_closed_vs_persistence_mse"] = share(r, "mse", persistence)
        record["teacher_check"] = (
            teacher_check(
                r.metrics.mse,
                persistence.metrics.mse if persistence is not None else None,
                {model: row.metrics.mse for model, row in unaided.items()},
                teacher_min_ratio,
            )
            if r.role == "teacher"
            else ""
        )
        records.append(record)
    columns = [
        "role",
        "model",
        "method",
        "params",
        "gflops",
        *METRIC_COLUMNS,
        *BAND_COLUMNS,
        *(f"latency_ms_b{b}" for b in batch_sizes),
        *((f"latency_cuda_ms_b{b}" for b in batch_sizes) if with_cuda else ()),
        *exported_columns,
        *(f"speedup_vs_{t.model}_b{b}" for t in teacher_rows for b in batch_sizes),
        "gap_closed_mse",
        "gap_closed_mae",
        "gap_closed_vs_persistence_mse",
        "teacher_check",
    ]
    table = pd.DataFrame(records, columns=columns)
    # a column that is blank in every row (e.g. onnx without onnxruntime) stays numeric
    return table.astype({c: float for c in exported_columns})


def _format_cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 10**digits else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub pipe table of ``table`` (no tabulate needed): text left, numbers right;
    floats with ``digits`` decimals (scientific when tiny or huge), NaN blank."""
    headers = [str(c).replace("|", "\\|") for c in table.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    body = [
        [_format_cell(v, digits) for v in row] for row in table.itertuples(index=False, name=None)
    ]
    widths = [max([len(h), 3, *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if num else "-" * w
            for w, num in zip(widths, numeric, strict=True)
        )
        + " |"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in body)]) + "\n"


def curves_json(
    results: Iterable[ModelResult],
    *,
    dataset: str,
    data_range: Sequence[float] | torch.Tensor,
    channels: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-step curves and all metrics of each model, JSON-ready (``+inf`` as ``"inf"``)."""
    values = data_range.tolist() if isinstance(data_range, torch.Tensor) else list(data_range)

    def clean(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {
        "dataset": dataset,
        "channels": list(channels),
        "data_range": [float(v) for v in values],
        **dict(extra or {}),
        "models": [
            {
                "role": r.role,
                "model": r.model,
                "method": r.method,
                "params": int(r.params),
                "flops": int(r.flops),
                "best_val_loss": clean(r.best_val_loss),
                "latency_ms": {str(b): v for b, v in r.latency_ms.items()},
                "latency_cuda_ms": {str(b): v for b, v in r.latency_cuda_ms.items()},
                "latency_exported_ms": {
                    f: {str(b): v for b, v in values.items()}
                    for f, values in r.latency_exported_ms.items()
                },
                "metrics": r.metrics.to_dict(),
            }
            for r in results
        ],
    }


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``<model>/<method>.<column>`` -> value for every finite numeric cell (for MLflow)."""
    out: dict[str, float] = {}
    for record in table.to_dict("records"):
        for column, value in record.items():
            if column in ("role", "model", "method") or isinstance(value, str):
                continue
            value = float(value)
            if math.isfinite(value):
                out[f"{record['model']}/{record['method']}.{column}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# figures (matplotlib Figure objects, no pyplot state)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# one dataset, end to end
# ---------------------------------------------------------------------------------------------


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Evaluation:
    """What ``evaluate_checkpoints`` returns."""

    results: list[ModelResult]
    table: pd.DataFrame
    curves: dict[str, Any]
    step_figure: Any
    band_figure: Any
    panel_figure: Any


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


def _exported_latencies(
    checkpoint: Mapping[str, Any],
    formats: Sequence[str],
    directory: Path,
    stem: str,
    cfg: EvaluationConfig,
    sample_shape: Sequence[int],
) -> tuple[dict[str, dict[int, float]], dict[str, str]]:
    """Export ``checkpoint`` to each format in ``directory`` and time it like the eager model:
    ``({format: {batch: ms}}, {format: why it has no numbers})``."""
    from sdkd_pipeline import deploy

    exporters = {
        "torchscript": (deploy.export_torchscript, ".pt"),
        "onnx": (deploy.export_onnx, ".onnx"),
    }
    out: dict[str, dict[int, float]] = {}
    failed: dict[str, str] = {}
    for fmt in formats:
        out[fmt] = {}
        export, suffix = exporters[fmt]
        try:
            path = export(checkpoint, directory / f"{stem}{suffix}")
            rows = deploy.exported_latency(
                path,
                sample_shape,
                cfg.batch_sizes,
                repeats=cfg.repeats,
                warmup=cfg.warmup,
                threads=cfg.threads,
                max_seconds=cfg.max_seconds,
            )
        except Exception as exc:  # a model that does not export: a blank cell, not a crash
            failed[fmt] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        out[fmt] = {int(row["batch_size"]): float(row["median_ms"]) for row in rows}
    return out, failed


def _latencies(
    module: torch.nn.Module, sample_shape: Sequence[int], cfg: EvaluationConfig
) -> tuple[dict[int, float], dict[int, float]]:
    """CPU latency and (when timed and available) CUDA latency of ``module`` (left on the CPU)."""
    latency = measure_latency(
        module,
        sample_shape,
        cfg.batch_sizes,
        repeats=cfg.repeats,
        warmup=cfg.warmup,
        threads=cfg.threads,
        device="cpu",
        max_seconds=cfg.max_seconds,
    )
    latency_cuda: dict[int, float] = {}
    if cfg.cuda_latency and torch.cuda.is_available():
        latency_cuda = measure_latency(
            module,
            sample_shape,
            cfg.batch_sizes,
            repeats=cfg.repeats,
            warmup=cfg.warmup,
            device="cuda",
            max_seconds=cfg.max_seconds,
        )
        module.cpu()
    return latency, latency_cuda


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
) -> Evaluation:
    """Evaluate ``entries`` = ``(role, model, method, module, checkpoint)`` on ``windows``
    (the test split) and build the table, curves and figures.

    The exported latency needs full checkpoints (as ``train_forecaster`` writes them); an
    entry whose checkpoint cannot be exported gets blank exported-latency cells. The baselines
    of ``cfg.baselines`` are built from ``windows`` (``baselines.build_baselines``: the
    climatology from the training split of the same store) and get rows of their own; a
    teacher whose ``teacher_check`` is not ``ok`` is logged as a warning.
    """
    from sdkd_pipeline.models.complexity import count_flops as default_flops
    from sdkd_pipeline.models.complexity import count_parameters as default_params
    from sdkd_pipeline.training import resolve_device

    count_params = count_params or default_params
    count_flops = count_flops or default_flops
    device = resolve_device(cfg.device)
    data_range = test_data_range(windows, cfg.batch_size)
    modules = {f"{model}/{method}": module for _, model, method, module, _ in entries}
    references = build_baselines(windows, cfg.baselines)
    for name, module in references.items():
        key = f"{name}/{BASELINE_ROW_METHOD}"
        if key in modules:
            raise ConfigError(f"evaluate_checkpoints: a checkpoint is named like baseline {key}")
        modules[key] = module
    metrics, truth, predictions = _evaluate_pass(
        modules,
        windows,
        data_range,
        batch_size=cfg.batch_size,
        device=device,
        keep=cfg.panel_windows or (0,),
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
    labels = {r.key: _label(r) for r in results}
    chosen = _chosen_windows(windows, cfg.panel_windows)
    panel = plot_prediction_panel(
        truth,
        {labels[r.key]: predictions[r.key] for r in results},
        step=cfg.panel_step,
        window_labels=chosen,
        title=f"{dataset}: forecast step {cfg.panel_step % truth.shape[1] + 1}, "
        f"channel {(getattr(windows, 'channels', None) or ['0'])[0]}",
    )
    return Evaluation(
        results=results,
        table=table,
        curves=curves,
        step_figure=plot_step_curves(results, title=f"{dataset}: error per forecast step"),
        band_figure=plot_band_errors(results, title=f"{dataset}: error by wavenumber band"),
        panel_figure=panel,
    )
