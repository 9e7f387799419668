"""One node per dataset, ``<dataset>.write_<dataset>_run_report``: it reads that dataset's
reporting outputs of the other stages and writes ``<dataset>.run_report``
(``data/08_reporting/<dataset>_report.md``).

Which inputs it has follows from the pipelines it comes after, not from a second copy of the
selection rules: the data summary always, each teacher's and student's summary, the spectral
table and the evaluation Markdown when those stages are in the run for the dataset. Being their
reader also keeps kedro-viz's collapsed view readable: kedro-viz draws every output nothing
reads outside its dataset's group, so without this node each summary would hang off the group.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.models.registry import MODEL_ROLES
from sdkd_pipeline.pipelines.report.nodes import (
    student_summary_input,
    teacher_summary_input,
    write_run_report,
)

TABLES = ("spectral_summary", "evaluation_markdown")


def report_inputs(dataset: str, available: set[str]) -> dict[str, str]:
    """``write_run_report``'s keyword -> catalog name, for the outputs of ``dataset`` among
    ``available``; teachers in name order, then students by (student, method)."""
    inputs = {"data_summary": f"{dataset}.data_summary"}
    inputs.update({t: f"{dataset}.{t}" for t in TABLES if f"{dataset}.{t}" in available})
    teachers, students = [], []
    for name in sorted(available):
        parts = name.split(".")
        if parts[0] != dataset or parts[-1] != "summary":
            continue
        if len(parts) == 3 and MODEL_ROLES.get(parts[1]) == "teacher":
            teachers.append((teacher_summary_input(parts[1]), name))
        elif len(parts) == 4 and MODEL_ROLES.get(parts[1]) == "student":
            students.append((student_summary_input(parts[1], parts[2]), name))
    return {**inputs, **dict(teachers), **dict(students)}


def create_report_pipeline(dataset: str, available: set[str]) -> Pipeline:
    func = partial(write_run_report, dataset=dataset)
    update_wrapper(func, write_run_report)
    wanted = report_inputs(dataset, available)
    # dot-free names in the template (Kedro reserves dots for namespaces), mapped below
    template = Pipeline(
        [
            node(
                func,
                inputs={key: key for key in wanted},
                outputs="run_report",
                name=f"write_{dataset}_run_report",
            )
        ]
    )
    return pipeline(template, namespace=dataset, inputs=wanted, tags=["report", dataset])


def create_pipeline(datasets: list[str], upstream: Pipeline) -> Pipeline:
    """A report per dataset of ``datasets`` whose data summary ``upstream`` writes."""
    available = upstream.all_outputs()
    return sum(
        (
            create_report_pipeline(d, available)
            for d in datasets
            if f"{d}.data_summary" in available
        ),
        Pipeline([]),
    )
