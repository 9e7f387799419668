"""The evaluation table and what is read off it: rows, gap closed, the teacher check,
Markdown, the per-step curves (JSON) and the MLflow metrics.

Imports only numpy, pandas and torch, so it runs without Kedro, MLflow, Zarr or Dask.

A student's speedup over a teacher is the teacher's latency divided by the student's. The
share of the teacher-student gap a distilled student closes is ``metrics.gap_closed`` on test
MSE and MAE, with the student trained by method ``none`` as the baseline and the teacher with
the lowest validation MSE (the checkpoint's ``best_val_loss``) as the reference. Reference rows
(role ``baseline``, method ``baseline``; ``persistence`` and ``climatology`` from
``baselines``) are never the reference teacher. ``gap_closed_vs_persistence_mse`` is
``metrics.gap_closed`` with persistence in place of ``none``. ``teacher_check`` says whether a
teacher is worth distilling: its test MSE below persistence's and at most
``none_mse / teacher_min_ratio`` for every student whose ``none`` row exists. An exported
latency a row has no number for is left blank (NaN). ``compact_table`` / ``compact_markdown``
are the short table a paper shows (fewer columns, units in the headers, 3 significant
figures); the full table keeps full precision in the CSV.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from sdkd_pipeline.evaluation.baselines import BASELINE_NAMES, BASELINE_ROLE
from sdkd_pipeline.evaluation.config import EXPORT_FORMATS, TEACHER_MIN_RATIO
from sdkd_pipeline.evaluation.metrics import (
    BAND_NAMES,
    LAT_WEIGHTED_NAMES,
    ForecastMetrics,
    gap_closed,
)

__all__ = [
    "BASELINE_METHOD",
    "ModelResult",
    "best_teacher",
    "build_table",
    "compact_markdown",
    "compact_table",
    "curves_json",
    "table_metrics",
    "teacher_check",
    "to_markdown",
]

BASELINE_METHOD = "none"
METRIC_COLUMNS = ("mse", "mae", "rmse", "psnr", "ssim")
BAND_COLUMNS = tuple(f"band_mse_{band}" for band in BAND_NAMES)
TEACHER_OK = "ok"
TEACHER_UNCHECKED = "not checked (no persistence or none row)"


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

    Columns: role, model, method, params, gflops, mse, mae, rmse, psnr, ssim, mse_lat and
    rmse_lat (the latitude-weighted MSE and RMSE, only when a row has them: a lat/lon grid),
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

    It is long because it lays out every column of the table in one place, in column order.
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
    lat_columns = LAT_WEIGHTED_NAMES if any(r.metrics.lat_weighted for r in rows) else ()
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
            **{
                name: math.nan if getattr(r.metrics, name) is None else getattr(r.metrics, name)
                for name in lat_columns
            },
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
        *lat_columns,
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


def _format_cell(value: Any, digits: int, notation: str | None = None) -> str:
    """One cell: ``notation`` None is ``digits`` decimals (scientific when tiny or huge);
    ``"fixed"`` / ``"sci"`` are ``digits`` significant figures in that notation."""
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
        if notation == "sci":
            return f"{value:.{digits - 1}e}"
        if notation == "fixed":
            return _significant_fixed(value, digits)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -(digits - 1)):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 10**digits else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _significant_fixed(value: float, significant: int) -> str:
    """``value`` rounded to ``significant`` figures, written without an exponent (trailing
    zeros kept: 0.500, 1230, 12.0)."""
    if value == 0:
        return "0"
    rounded = float(f"{value:.{significant}g}")
    decimals = max(significant - 1 - math.floor(math.log10(abs(rounded))), 0)
    return f"{rounded:.{decimals}f}"


def _column_notation(values: Sequence[Any], significant: int) -> str:
    """``"sci"`` for a float column with a finite non-zero value of magnitude ``>= 10^(s+2)``
    or ``< 10^-s`` (``s`` = ``significant``), where fixed notation would need many digits or
    zeros; else ``"fixed"``. One notation per column keeps its numbers comparable."""
    magnitudes = [
        abs(float(v))
        for v in values
        if isinstance(v, (float, np.floating)) and math.isfinite(v) and v != 0
    ]
    if magnitudes and (
        max(magnitudes) >= 10 ** (significant + 2) or min(magnitudes) < 10**-significant
    ):
        return "sci"
    return "fixed"


def to_markdown(table: pd.DataFrame, digits: int = 4, significant: int | None = None) -> str:
    """A GitHub pipe table of ``table`` (no tabulate needed): text left, numbers right, NaN
    blank, integers with thousands separators. Floats with ``digits`` decimals (scientific
    when tiny or huge), or, with ``significant``, that many significant figures in one
    notation per column (``_column_notation``: fixed, or scientific for a column spanning
    tiny or huge values)."""
    headers = [str(c).replace("|", "\\|") for c in table.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    rows = list(table.itertuples(index=False, name=None))
    if significant is None:
        body = [[_format_cell(v, digits) for v in row] for row in rows]
    else:
        notations = [
            _column_notation([row[i] for row in rows], significant) for i in range(len(headers))
        ]
        body = [
            [_format_cell(v, significant, n) for v, n in zip(row, notations, strict=True)]
            for row in rows
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


COMPACT_SIGNIFICANT = 3


def compact_table(
    table: pd.DataFrame,
    *,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
    reference_teacher: str | None = None,
) -> pd.DataFrame:
    """The table a paper shows, from ``build_table``'s (the full one stays in the CSV): role,
    model, method, params, GFLOPs, MSE, MAE, PSNR, SSIM, high-band MSE, the CPU latency at
    the smallest batch size, the speedup over ``reference_teacher`` (default: the first
    teacher with a speedup column) at that batch size and the gap closed on MSE. Headers
    carry the units, from ``channel_metadata`` (the store's CF metadata, one entry per
    channel; ``[units unknown]`` without it, ``[mixed units]`` for channels that disagree).
    A column the table lacks is left out."""
    from sdkd_pipeline.evaluation.plots.style import combined_metadata, units_suffix

    meta = combined_metadata(channel_metadata or [])
    batches = sorted(
        int(c.removeprefix("latency_ms_b")) for c in table.columns if c.startswith("latency_ms_b")
    )
    columns: dict[str, str] = {
        "role": "role",
        "model": "model",
        "method": "method",
        "params": "params",
        "gflops": "GFLOPs",
        "mse": f"MSE {units_suffix(meta, 2)}",
        "mae": f"MAE {units_suffix(meta, 1)}",
        "psnr": "PSNR [dB]",
        "ssim": "SSIM",
        "band_mse_high": f"high-band MSE {units_suffix(meta, 2)}",
    }
    if batches:
        b = batches[0]
        columns[f"latency_ms_b{b}"] = f"CPU latency b={b} [ms]"
        speedups = [
            c for c in table.columns if c.startswith("speedup_vs_") and c.endswith(f"_b{b}")
        ]
        wanted = f"speedup_vs_{reference_teacher}_b{b}"
        speedup = wanted if wanted in speedups else (speedups[0] if speedups else None)
        if speedup is not None:
            teacher = speedup.removeprefix("speedup_vs_").removesuffix(f"_b{b}")
            columns[speedup] = f"speedup vs {teacher} [×]"
    columns["gap_closed_mse"] = "gap closed (MSE)"
    kept = {c: header for c, header in columns.items() if c in table.columns}
    return table[list(kept)].rename(columns=kept)


def compact_markdown(
    table: pd.DataFrame,
    *,
    channel_metadata: Sequence[Mapping[str, str]] | None = None,
    reference_teacher: str | None = None,
    significant: int = COMPACT_SIGNIFICANT,
) -> str:
    """``compact_table`` as a pipe table, ``significant`` figures per number
    (``to_markdown``), then one line with each teacher's ``teacher_check`` verdict."""
    text = to_markdown(
        compact_table(
            table, channel_metadata=channel_metadata, reference_teacher=reference_teacher
        ),
        significant=significant,
    )
    if "teacher_check" in table.columns:
        teachers = table[table["role"] == "teacher"]
        verdicts = [f"{r['model']}: {r['teacher_check']}" for r in teachers.to_dict("records")]
        if verdicts:
            text += f"\n`teacher_check`: {'; '.join(verdicts)}.\n"
    return text


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
