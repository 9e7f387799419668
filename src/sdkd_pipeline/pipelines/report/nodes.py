"""The run report: one Markdown page per dataset, from the summaries the stages wrote.

The data summary, every trained model's summary (teachers and students: size, epochs, why it
stopped, validation and test MSE), the teachers' spectral table and the evaluation table go to
``data/08_reporting/<dataset>_report.md``; a part is there when its stage ran for the dataset.
Nothing is recomputed: the page is a reading of the other outputs (timings included, so two
runs' pages differ in their samples/s and latency columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from sdkd_pipeline.evaluation.tables import to_markdown

# prefixes of the model-summary inputs, e.g. ``teacher__simvp``, ``student__unet__sdkd``
TEACHER_SUMMARY = "teacher__"
STUDENT_SUMMARY = "student__"

TRAINING_COLUMNS = {
    "model": "model",
    "role": "role",
    "method": "method",
    "n_parameters": "parameters",
    "flops_per_sample": "FLOPs per sample",
    "epochs_run": "epochs run",
    "best_epoch": "best epoch",
    "stop_reason": "stopped",
    "best_val_mse": "best val MSE",
    "test_mse": "test MSE",
    "samples_per_second": "samples/s",
}


def teacher_summary_input(teacher: str) -> str:
    return f"{TEACHER_SUMMARY}{teacher}"


def student_summary_input(student: str, method: str) -> str:
    return f"{STUDENT_SUMMARY}{student}__{method}"


def write_run_report(
    data_summary: Mapping[str, Any],
    *,
    dataset: str,
    spectral_summary: pd.DataFrame | None = None,
    evaluation_markdown: str | None = None,
    **model_summaries: Mapping[str, Any],
) -> str:
    """The Markdown page of ``dataset``: data, training (teachers first, then students in the
    order given), spectral analysis and evaluation, each section only when its input is
    given."""
    unknown = [k for k in model_summaries if not k.startswith((TEACHER_SUMMARY, STUDENT_SUMMARY))]
    if unknown:  # a wiring mistake in pipeline.py, not a user's
        raise TypeError(f"write_run_report: unexpected inputs {unknown}")
    teachers = [v for k, v in model_summaries.items() if k.startswith(TEACHER_SUMMARY)]
    students = [v for k, v in model_summaries.items() if k.startswith(STUDENT_SUMMARY)]
    parts = [f"# {dataset}: run report\n", _data_section(data_summary)]
    if teachers or students:
        parts.append(_training_section([*teachers, *students]))
    if spectral_summary is not None:
        parts.append(
            "## Spectral analysis of the teachers\n\n"
            "One row per teacher and latent (`data/08_reporting/spectral/`, with the "
            "log-log plots).\n\n" + to_markdown(_integers(spectral_summary))
        )
    if evaluation_markdown is not None:
        parts.append(_demoted(evaluation_markdown, "Evaluation"))
    return "\n".join(parts)


def _data_section(summary: Mapping[str, Any]) -> str:
    shape = summary.get("shape") or {}
    windows = summary.get("windows") or {}
    row = {
        "source": summary.get("source"),
        "shape": " x ".join(f"{k} {v}" for k, v in shape.items()),
        "channels": ", ".join(map(str, summary.get("channels") or [])),
        # input-only channels (data/forcings.py), shown only where a dataset declares them
        **(
            {"input-only forcings": ", ".join(map(str, summary["forcing_channels"]))}
            if summary.get("forcing_channels")
            else {}
        ),
        "T_in": summary.get("t_in"),
        "T_out": summary.get("t_out"),
        "stride": summary.get("stride"),
        "split": summary.get("split_method"),
        **{f"{name} windows": count for name, count in windows.items()},
    }
    return "## Data\n\n" + to_markdown(pd.DataFrame([row]))


def _training_section(summaries: list[Mapping[str, Any]]) -> str:
    rows = [{label: s.get(key) for key, label in TRAINING_COLUMNS.items()} for s in summaries]
    table = pd.DataFrame(rows, columns=list(TRAINING_COLUMNS.values()))
    return (
        "## Training\n\n"
        "Every trained model's summary (`data/06_models/`); MSE in normalized units, as "
        "the engine's `val_loss` and `test_loss` (the evaluation's are de-normalized).\n\n"
        + to_markdown(table)
    )


def _integers(table: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding only whole numbers (and blanks) as integers, blanks kept blank:
    a CSV read back turns ``power_law``'s 1 / 0 / blank into 1.0 / 0.0 / NaN."""
    table = table.copy()
    for column in table.columns:
        values = table[column]
        known = values.dropna()
        if pd.api.types.is_float_dtype(values) and len(known) and (known % 1 == 0).all():
            whole = [None if pd.isna(v) else int(v) for v in values]
            table[column] = pd.Series(whole, index=table.index, dtype=object)
    return table


def _demoted(markdown: str, title: str) -> str:
    """``markdown`` as a section of the page: its headings one level down, under ``## title``
    unless it starts with a heading of its own (then that one, as ``## ...``)."""
    lines = markdown.strip("\n").splitlines()
    if not lines or not lines[0].startswith("# "):
        lines = [f"# {title}", "", *lines]
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in lines) + "\n"
