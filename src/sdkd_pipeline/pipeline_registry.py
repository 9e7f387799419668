"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sdkd_pipeline.pipelines import data, distill, download, evaluate, report, spectral, teacher
from sdkd_pipeline.pipelines.selection import (
    datasets_with,
    distill_selection,
    enabled_datasets,
    enabled_models,
    teacher_datasets,
)


def register_pipelines() -> dict[str, Pipeline]:
    """``data`` for the enabled datasets; ``download`` for those of them with download
    parameters; ``teacher`` for every (dataset, teacher) of ``teacher.datasets`` (default: the
    enabled datasets) and ``teacher.models``; ``spectral`` analyses each of those teachers'
    latents; ``evaluate`` tables every teacher and student of each distilled
    dataset on its test split; ``__default__`` runs every stage (downloads are explicit, never
    implied), then one report page per dataset from what they wrote (not registered alone:
    it reads the outputs of the other stages of the same run)."""
    datasets = enabled_datasets()
    data_pipeline = data.create_pipeline(datasets)
    teachers = enabled_models("teacher")
    trained_on = teacher_datasets()
    teacher_pipeline = teacher.create_pipeline(trained_on, teachers)
    spectral_pipeline = spectral.create_pipeline(trained_on, teachers)
    distill_datasets, students, methods, distill_params = distill_selection()
    distill_pipeline = distill.create_pipeline(
        distill_datasets, students, methods, teachers, distill_params
    )
    evaluate_pipeline = evaluate.create_pipeline(distill_datasets, teachers, students, methods)
    stages = data_pipeline + teacher_pipeline + spectral_pipeline + distill_pipeline
    stages += evaluate_pipeline
    return {
        "data": data_pipeline,
        "download": download.create_pipeline(datasets_with("download", datasets)),
        "teacher": teacher_pipeline,
        "spectral": spectral_pipeline,
        "distill": distill_pipeline,
        "evaluate": evaluate_pipeline,
        "__default__": stages + report.create_pipeline(datasets, stages),
    }
