"""One modular training pipeline, reused per (dataset, teacher) under ``<dataset>.<teacher>``."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Pipeline, node, pipeline

from sdkd_pipeline.pipelines.teacher.nodes import train_forecaster


def create_teacher_pipeline(dataset: str, model: str) -> Pipeline:
    func = partial(train_forecaster, dataset=dataset, model_name=model, role="teacher")
    update_wrapper(func, train_forecaster)
    template = Pipeline(
        [
            node(
                func,
                inputs={
                    "tensors": "tensors",
                    "model_params": f"params:teacher.{model}",
                    "training": "params:teacher.training",
                    "tracking": "params:tracking",
                    "progress": "params:data.progress",
                    "shared_training": "params:training",
                },
                outputs=["checkpoint", "summary"],
                name=f"train_teacher_{model}",
            )
        ]
    )
    return pipeline(
        template,
        namespace=f"{dataset}.{model}",
        inputs={"tensors": f"{dataset}.tensors"},
        parameters={
            f"params:teacher.{model}": f"params:teacher.{model}",
            "params:teacher.training": "params:teacher.training",
            "params:tracking": "params:tracking",
            "params:training": "params:training",
            "params:data.progress": "params:data.progress",
        },
        tags=["teacher", dataset, model],
    )


def create_pipeline(datasets: list[str], teachers: list[str]) -> Pipeline:
    return sum((create_teacher_pipeline(d, m) for d in datasets for m in teachers), Pipeline([]))
