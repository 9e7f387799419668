"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sdkd_pipeline.pipelines import data, download, teacher
from sdkd_pipeline.pipelines.selection import datasets_with, enabled_datasets, enabled_models


def register_pipelines() -> dict[str, Pipeline]:
    """``data`` for the enabled datasets; ``download`` for those of them with download
    parameters; ``teacher`` for every enabled (dataset, teacher); ``__default__`` runs every
    stage (downloads are explicit, never implied)."""
    datasets = enabled_datasets()
    data_pipeline = data.create_pipeline(datasets)
    teacher_pipeline = teacher.create_pipeline(datasets, enabled_models("teacher"))
    return {
        "data": data_pipeline,
        "download": download.create_pipeline(datasets_with("download", datasets)),
        "teacher": teacher_pipeline,
        "__default__": data_pipeline + teacher_pipeline,
    }
