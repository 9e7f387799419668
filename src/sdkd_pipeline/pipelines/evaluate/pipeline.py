"""One node per dataset, ``<dataset>.evaluate_models_on_<dataset>``: it reads
``<dataset>.tensors``, every teacher checkpoint ``<dataset>.<teacher>.checkpoint`` and every
student checkpoint ``<dataset>.<student>.<method>.checkpoint`` of the distill selection, and
writes ``<dataset>.evaluation_table`` (CSV), ``.evaluation_markdown``, ``.evaluation_curves``
(JSON), the figures of ``evaluation.plots.FIGURES`` (``FIGURE_OUTPUTS``) and the rollout's
``.evaluation_rollout`` (JSON) and ``.evaluation_rollout_plot`` under
``data/08_reporting/evaluation/``.
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.evaluation.plots import FIGURES
from sdkd_pipeline.pipelines.evaluate.nodes import evaluate_dataset, student_input, teacher_input

# each figure's catalog entry (conf/base/catalog.yml: <dataset>_<figure>.png)
FIGURE_OUTPUTS = {
    "metrics_per_step": "evaluation_step_plot",
    "band_errors": "evaluation_band_plot",
    "predictions": "evaluation_panel",
    "band_errors_by_lead": "evaluation_band_lead_plot",
    "forecast_spectra": "evaluation_spectra_plot",
    "pareto": "evaluation_pareto_plot",
    "gap_closed": "evaluation_gap_plot",
}
assert list(FIGURE_OUTPUTS) == list(FIGURES), "one catalog entry per figure, in FIGURES order"
OUTPUTS = [
    "evaluation_table",
    "evaluation_markdown",
    "evaluation_curves",
    *FIGURE_OUTPUTS.values(),
    "evaluation_rollout",
    "evaluation_rollout_plot",
]


def create_evaluate_pipeline(
    dataset: str, teachers: list[str], students: list[str], methods: list[str]
) -> Pipeline:
    func = partial(
        evaluate_dataset,
        dataset=dataset,
        teachers=list(teachers),
        students=list(students),
        methods=list(methods),
    )
    update_wrapper(func, evaluate_dataset)
    # dot-free names in the template (Kedro reserves dots for namespaces), mapped below
    checkpoints = {teacher_input(t): f"{teacher_input(t)}_checkpoint" for t in teachers}
    checkpoints.update(
        {
            student_input(s, m): f"{student_input(s, m)}_checkpoint"
            for s in students
            for m in methods
        }
    )
    template = Pipeline(
        [
            node(
                func,
                inputs={
                    "tensors": "tensors",
                    "evaluate_params": "params:evaluate",
                    "tracking": "params:tracking",
                    **checkpoints,
                },
                outputs=OUTPUTS,
                name=f"evaluate_models_on_{dataset}",
            )
        ]
    )
    mapping = {"tensors": f"{dataset}.tensors"}
    mapping.update(
        {f"{teacher_input(t)}_checkpoint": f"{dataset}.{t}.checkpoint" for t in teachers}
    )
    mapping.update(
        {
            f"{student_input(s, m)}_checkpoint": f"{dataset}.{s}.{m}.checkpoint"
            for s in students
            for m in methods
        }
    )
    return pipeline(
        template,
        namespace=dataset,
        inputs=mapping,
        parameters={"params:evaluate": "params:evaluate", "params:tracking": "params:tracking"},
        tags=["evaluate", dataset],
    )


def create_pipeline(
    datasets: list[str], teachers: list[str], students: list[str], methods: list[str]
) -> Pipeline:
    if not teachers and not (students and methods):
        return Pipeline([])
    return sum(
        (create_evaluate_pipeline(d, teachers, students, methods) for d in datasets), Pipeline([])
    )
