"""The evaluation node: every teacher and student checkpoint of one dataset on its test split,
one table (CSV, and a compact Markdown one), per-step curves (JSON), the figures of
``evaluation.plots.FIGURES`` and one MLflow run ``<dataset>/evaluation``. The work is done by ``sdkd_pipeline.evaluation``."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.evaluation import (
    FIGURES,
    EvaluationConfig,
    compact_markdown,
    evaluate_checkpoints,
    table_metrics,
)
from sdkd_pipeline.evaluation.accuracy import lat_weighting_latitudes, test_data_range
from sdkd_pipeline.evaluation.plots.style import channel_metadata_of
from sdkd_pipeline.evaluation.rollout import RolloutResult, evaluate_rollouts, plot_rollouts
from sdkd_pipeline.models.checkpoint import Checkpoint
from sdkd_pipeline.tracking import DEFAULT_EXPERIMENT, MLflowTracker, flatten_params

if TYPE_CHECKING:
    from sdkd_pipeline.evaluation.checkpoints import Evaluation

logger = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher_"
STUDENT_PREFIX = "student_"
METHOD_SEPARATOR = "__"


def teacher_input(teacher: str) -> str:
    return f"{TEACHER_PREFIX}{teacher}"


def student_input(student: str, method: str) -> str:
    return f"{STUDENT_PREFIX}{student}{METHOD_SEPARATOR}{method}"


def _parse_input(name: str) -> tuple[str, str, str | None]:
    """``teacher_simvp`` -> (teacher, simvp, None); ``student_unet__sdkd`` -> (student, unet,
    sdkd)."""
    if name.startswith(TEACHER_PREFIX):
        return "teacher", name.removeprefix(TEACHER_PREFIX), None
    if name.startswith(STUDENT_PREFIX):
        student, sep, method = name.removeprefix(STUDENT_PREFIX).partition(METHOD_SEPARATOR)
        if sep and student and method:
            return "student", student, method
    raise ValueError(
        f"evaluate_dataset: input {name!r} is neither teacher_<model> nor student_<model>__<method>"
    )


def _checked(
    label: str,
    command: str,
    checkpoint: Mapping[str, Any],
    model: str,
    method: str | None,
    windows: WindowDataset,
) -> Checkpoint:
    """``checkpoint`` as what its catalog entry says it is (architecture and, for a student,
    method) and trained on the store's data; else an error naming it and ``command``."""
    ckpt = Checkpoint.of(checkpoint, origin=label).expect_model(model, command=command)
    if method is not None:
        ckpt.expect_method(method, command=command)
    return ckpt.check_trained_on(windows, command=command)


def evaluate_dataset(
    tensors: xr.Dataset,
    evaluate_params: Mapping[str, Any],
    tracking: Mapping[str, Any],
    *,
    dataset: str,
    teachers: list[str] | None = None,
    students: list[str] | None = None,
    methods: list[str] | None = None,
    **checkpoints: Mapping[str, Any],
) -> tuple[Any, ...]:
    """Evaluate every checkpoint passed as ``teacher_<model>`` or ``student_<model>__<method>``
    on the test split of ``dataset``.

    Returns the table, its compact Markdown, the per-step curves JSON and the figures in
    ``FIGURES`` order; logs them to one MLflow run ``<dataset>/evaluation``.
    """
    cfg = EvaluationConfig.from_params(evaluate_params)
    store = tensors.encoding.get("store_path") or tensors
    windows = WindowDataset(store, "test")
    entries = _entries(checkpoints, windows)
    result = evaluate_checkpoints(
        entries,
        windows,
        cfg,
        dataset=dataset,
        # evaluate.lat_weighted: the rows' latitudes for the mse_lat / rmse_lat columns, or None
        latitudes=lat_weighting_latitudes(cfg.lat_weighted, tensors, dataset=dataset),
        teachers=teachers,
        students=students,
        methods=methods,
    )
    table = result.table
    markdown = _markdown(dataset, windows, cfg, result)

    rollouts = _rollouts(entries, store, windows, cfg, dataset)
    table["rollout_lead_behind_persistence"] = [
        _behind(rollouts, f"{r['model']}/{r['method']}") for r in table.to_dict("records")
    ]
    rollout_figure = plot_rollouts(rollouts, title=None)
    result.curves["rollout"] = rollouts.to_dict()  # the evaluation run's curves JSON has it

    _log_run(
        tracking,
        dataset,
        evaluate_params,
        windows,
        table,
        markdown,
        result,
        extra_figures={"rollout": rollout_figure},
    )
    _log_on_model_runs(entries, result)
    _log_rollouts(entries, rollouts)
    _log_student_models(entries, windows, dataset, tracking)

    for record in table.to_dict("records"):
        logger.info(
            "%s %s/%s: test MSE %.4g, MAE %.4g, SSIM %.4f, gap closed (MSE) %s",
            dataset,
            record["model"],
            record["method"],
            record["mse"],
            record["mae"],
            record["ssim"],
            "-" if math.isnan(record["gap_closed_mse"]) else f"{record['gap_closed_mse']:.3f}",
        )
    figures = (result.figures[name] for name in FIGURES)
    return (table, markdown, result.curves, *figures, rollouts.to_dict(), rollout_figure)


def _rollouts(
    entries: list, store: Any, windows: WindowDataset, cfg: EvaluationConfig, dataset: str
) -> RolloutResult:
    """Every model's autoregressive rollout (``evaluation.rollout``), or an empty result saying
    why there is none (switched off, or test trajectories too short)."""
    t_out = int(windows.t_out)
    if not cfg.rollout:
        return RolloutResult(cfg.rollout_factor * t_out, t_out, 0, skipped="evaluate.rollout off")
    from sdkd_pipeline.devices import resolve_device

    modules = {f"{model}/{method}": module for _, model, method, module, _ in entries}
    result = evaluate_rollouts(
        modules,
        store,
        factor=cfg.rollout_factor,
        max_windows=cfg.rollout_max_windows,
        batch_size=cfg.batch_size,
        data_range=test_data_range(windows, cfg.batch_size),
        device=resolve_device(cfg.device, param="evaluate.device"),
        ssim_convention=cfg.ssim_convention,
        climatology=cfg.climatology,
    )
    if result.skipped:
        logger.info("%s: no rollout: %s", dataset, result.skipped)
    else:
        behind = {k: c.behind_persistence_lead for k, c in result.curves.items()}
        logger.info(
            "%s: rollout over %d frames on %d test windows; lead time at which each model "
            "falls behind persistence: %s",
            dataset,
            result.horizon,
            result.windows,
            ", ".join(f"{k} {'never' if v is None else v}" for k, v in behind.items()),
        )
    return result


def _behind(rollouts: RolloutResult, key: str) -> float:
    curves = rollouts.curves.get(key)
    if curves is None or curves.behind_persistence_lead is None:
        return math.nan
    return float(curves.behind_persistence_lead)


def _log_rollouts(entries: list, rollouts: RolloutResult) -> None:
    """Each model's rollout curves on its own training run, ``step`` = lead time:
    ``rollout_mse``, ``rollout_ssim``, ``rollout_energy_ratio_<band>``."""
    if rollouts.skipped:
        return
    import time

    import mlflow
    from mlflow.entities import Metric

    from sdkd_pipeline.tracking import current_tracking_uri, log_metrics_on_run

    client = mlflow.MlflowClient(tracking_uri=current_tracking_uri())
    now = int(time.time() * 1000)
    for _, model, method, _, checkpoint in entries:
        run_id, curves = checkpoint.get("mlflow_run_id"), rollouts.curves.get(f"{model}/{method}")
        if not run_id or curves is None:
            continue
        series = {"rollout_mse": curves.mse, "rollout_ssim": curves.ssim}
        series.update({f"rollout_energy_ratio_{b}": v for b, v in curves.energy_ratio.items()})
        metrics = [
            Metric(name, float(v), now, lead)
            for name, values in series.items()
            for lead, v in enumerate(values, start=1)
            if math.isfinite(float(v))
        ]
        log_metrics_on_run(client, run_id, metrics, f"{model}/{method}'s rollout")


def _entries(
    checkpoints: Mapping[str, Mapping[str, Any]], windows: WindowDataset
) -> list[tuple[str, str, str, Any, Checkpoint]]:
    """``(role, model, method, module, checkpoint)`` of every input, each checked against its
    catalog name and the store's data."""
    entries = []
    for name, checkpoint in checkpoints.items():
        role, model, method = _parse_input(name)
        if role == "teacher":
            label, command = f"teacher {model!r}", "kedro run --pipelines=teacher"
        else:
            label, command = f"student {model!r} ({method})", "kedro run --pipelines=distill"
        checkpoint = _checked(label, command, checkpoint, model, method, windows)
        module = checkpoint.build_model()
        entries.append(
            (role, model, method or str(checkpoint.get("method", "supervised")), module, checkpoint)
        )
    return entries


def _markdown(
    dataset: str, windows: WindowDataset, cfg: EvaluationConfig, result: Evaluation
) -> str:
    """The table's Markdown with its header: what was measured and how."""
    table = result.table
    return (
        f"# {dataset}: test split, de-normalized\n\n"
        f"{len(windows)} test windows; PSNR and SSIM with data range "
        f"{', '.join(f'{v:.4g}' for v in result.curves['data_range'])} (max - min of "
        f"the test truth per channel), SSIM in the {cfg.ssim_convention} convention "
        f"(`evaluate.ssim.convention`); latency in ms on the CPU with "
        f"{cfg.threads} thread(s), median of {_repeats_note(cfg)}, once per architecture"
        f"{_exported_note(cfg, result.curves)}; gap closed relative to "
        f"`none` (`gap_closed_vs_persistence_mse`: relative to persistence) against teacher "
        f"{result.curves['gap_reference_teacher']}.{_baselines_note(result.curves)}"
        f"{_teacher_check_note(cfg)} The table below is the compact one (3 significant "
        f"figures, units in the headers); `{dataset}_table.csv` has every column at full "
        f"precision.\n\n"
        + compact_markdown(
            table,
            channel_metadata=channel_metadata_of(windows),
            reference_teacher=result.curves["gap_reference_teacher"],
        )
    )


def _log_run(
    tracking: Mapping[str, Any] | None,
    dataset: str,
    evaluate_params: Mapping[str, Any],
    windows: WindowDataset,
    table: pd.DataFrame,
    markdown: str,
    result: Evaluation,
    extra_figures: Mapping[str, Any] | None = None,
) -> None:
    """The MLflow run ``<dataset>/evaluation``: parameters, metrics, table, curves, figures
    (``result``'s and ``extra_figures``); its id joins ``result.curves``."""
    tracking = dict(tracking or {})
    tags = {
        "dataset": dataset,
        "stage": "evaluation",
        "method": "evaluation",
        "models": ",".join(f"{r.model}/{r.method}" for r in result.results),
        "ssim_convention": result.curves["ssim_convention"],
    }
    with MLflowTracker(
        experiment=tracking.get("experiment", DEFAULT_EXPERIMENT),
        run_name=f"{dataset}/evaluation",
        tags=tags,
    ) as tracker:
        tracker.log_params(
            flatten_params(
                {
                    "dataset": dataset,
                    "evaluate": dict(evaluate_params or {}),
                    "n_test_windows": len(windows),
                }
            )
        )
        tracker.log_metrics(_metrics(table, result.results))
        with tempfile.TemporaryDirectory() as tmp:
            for suffix, text in (("csv", table.to_csv(index=False)), ("md", markdown)):
                path = Path(tmp) / f"{dataset}_evaluation.{suffix}"
                path.write_text(text)
                tracker.log_artifact(path)
        tracker.log_dict(result.curves, f"{dataset}_curves.json")
        for name, figure in {**result.figures, **(extra_figures or {})}.items():
            tracker.log_figure(figure, f"{dataset}_{name}.png")
        result.curves["mlflow_run_id"] = tracker.run_id


def _repeats_note(cfg: EvaluationConfig) -> str:
    if cfg.max_seconds is None or cfg.repeats <= 3:
        return f"{cfg.repeats} calls"
    return f"{cfg.repeats} calls (3 when they take over {cfg.max_seconds:g} s)"


def _exported_note(cfg: EvaluationConfig, curves: Mapping[str, Any]) -> str:
    """How the exported-latency columns were measured, for the Markdown header."""
    if not cfg.exported_formats:
        return ""
    who = "every model" if cfg.exported_teachers else "the students"
    note = (
        f" (`latency_<format>_ms_*`: {' and '.join(cfg.exported_formats)} exports of {who}"
        f", the same way"
    )
    missing = curves.get("latency", {}).get("onnx_unavailable")
    if missing:
        note += f"; ONNX blank: {missing}"
    return note + ")"


def _baselines_note(curves: Mapping[str, Any]) -> str:
    """What the baseline rows are, for the Markdown header ("" without baselines)."""
    baselines = curves.get("baselines") or {}
    if not baselines:
        return ""
    parts = [f"`{name}` = {info['definition']}" for name, info in baselines.items()]
    return (
        " Baseline rows (role `baseline`: no learning, scored and timed like the models, 0 "
        f"parameters and FLOPs, not exported): {'; '.join(parts)}."
    )


def _teacher_check_note(cfg: EvaluationConfig) -> str:
    return (
        f" `teacher_check`: `ok` when a teacher's test MSE is below persistence's and at most "
        f"1/{cfg.teacher_min_ratio:g} of each student's `none` MSE; otherwise the reasons "
        f"(`not checked` without a persistence or `none` row)."
    )


def _log_on_model_runs(entries: list, result: Evaluation) -> None:
    """Each trained model's test results on its own training run, so MLflow's Compare view
    sorts students by them: every numeric column of its table row as ``test_<column>``
    (de-normalized MSE, MAE, RMSE, PSNR, SSIM, band errors, latency, speedups, gap closed) and
    ``test_<metric>_by_lead`` with ``step`` = lead time. A model without a run is skipped."""
    import time

    import mlflow
    from mlflow.entities import Metric

    from sdkd_pipeline.tracking import current_tracking_uri, log_metrics_on_run

    run_ids = {
        f"{model}/{method}": checkpoint.get("mlflow_run_id")
        for _, model, method, _, checkpoint in entries
    }
    rows = {f"{r['model']}/{r['method']}": r for r in result.table.to_dict("records")}
    client = mlflow.MlflowClient(tracking_uri=current_tracking_uri())
    now = int(time.time() * 1000)
    for res in result.results:
        run_id = run_ids.get(res.key)
        if not run_id or res.key not in rows:
            continue
        metrics = [
            Metric(f"test_{column}", float(value), now, 0)
            for column, value in rows[res.key].items()
            if column not in ("role", "model", "method")
            and not isinstance(value, str)
            and math.isfinite(float(value))
        ]
        for name in ("mse", "mae", "rmse", "psnr", "ssim"):
            for lead, value in enumerate(getattr(res.metrics, f"{name}_per_step"), start=1):
                if math.isfinite(float(value)):
                    metrics.append(Metric(f"test_{name}_by_lead", float(value), now, lead))
        tags = {"test_ssim_convention": res.metrics.ssim_convention}
        log_metrics_on_run(client, run_id, metrics, f"{res.key}'s test metrics", tags)


def _log_student_models(
    entries: list, windows: WindowDataset, dataset: str, tracking: Mapping[str, Any] | None
) -> None:
    """Each student as MLflow models on its own run, the first test window as their input
    example, and the best (lowest validation MSE) registered as ``sdkd-<dataset>-student``,
    per ``tracking.models`` (``sdkd_pipeline.tracking_models``)."""
    from sdkd_pipeline.tracking import TrackingConfig

    cfg = TrackingConfig.from_params(tracking)
    if not cfg.log_models or not any(role == "student" for role, *_ in entries):
        return
    from sdkd_pipeline.tracking import current_tracking_uri
    from sdkd_pipeline.tracking_models import log_students

    log_students(
        current_tracking_uri(),
        entries,
        windows[0][0].unsqueeze(0),
        dataset=dataset,
        register=cfg.register_models,
        name_template=cfg.registered_name,
    )


def _metrics(table: pd.DataFrame, results: list) -> dict[str, float]:
    """``<model>/<method>.<metric>``: the table's numbers and each model's per-step curves."""
    out = {
        f"{r.key}.{name}": value
        for r in results
        for name, value in r.metrics.flat().items()
        if math.isfinite(value)
    }
    out.update(table_metrics(table))
    return out
