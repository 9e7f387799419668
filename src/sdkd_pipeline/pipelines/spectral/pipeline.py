"""One modular pipeline per (dataset, teacher) under ``<dataset>.<teacher>``, next to that
teacher's training node; it reads ``<dataset>.tensors`` and ``<dataset>.<teacher>.checkpoint``
(and ``params:distill`` for the distillation cutoff ``distill.cutoff.k``) and writes
``<dataset>.<teacher>.spectra`` (JSON) and ``.spectra_plot`` (PNG). Per dataset one
node gathers the teachers' summaries into ``<dataset>.spectral_summary`` (CSV).
"""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.pipelines.spectral.nodes import analyse_teacher_spectra, tabulate_spectra


def create_spectral_pipeline(dataset: str, teacher: str) -> Pipeline:
    func = partial(analyse_teacher_spectra, dataset=dataset, teacher=teacher)
    update_wrapper(func, analyse_teacher_spectra)
    template = Pipeline(
        [
            node(
                func,
                inputs=[
                    "tensors",
                    "checkpoint",
                    "params:spectral",
                    "params:tracking",
                    "params:distill",
                ],
                outputs=["spectra", "spectra_plot"],
                name=f"analyse_{teacher}_latent_spectra",
            )
        ]
    )
    return pipeline(
        template,
        namespace=f"{dataset}.{teacher}",
        inputs={"tensors": f"{dataset}.tensors"},
        parameters={
            "params:spectral": "params:spectral",
            "params:tracking": "params:tracking",
            "params:distill": "params:distill",
        },
        tags=["spectral", dataset, teacher],
    )


def create_table_pipeline(dataset: str, teachers: list[str]) -> Pipeline:
    # dot-free names in the template (Kedro reserves dots for namespaces), mapped below
    template = Pipeline(
        [
            node(
                tabulate_spectra,
                inputs={teacher: f"{teacher}_spectra" for teacher in teachers},
                outputs="spectral_summary",
                name=f"tabulate_{dataset}_teacher_spectra",
            )
        ]
    )
    return pipeline(
        template,
        namespace=dataset,
        inputs={f"{t}_spectra": f"{dataset}.{t}.spectra" for t in teachers},
        tags=["spectral", dataset],
    )


def create_pipeline(datasets: list[str], teachers: list[str]) -> Pipeline:
    if not teachers:
        return Pipeline([])
    return sum(
        (
            sum((create_spectral_pipeline(d, t) for t in teachers), Pipeline([]))
            + create_table_pipeline(d, teachers)
            for d in datasets
        ),
        Pipeline([]),
    )
