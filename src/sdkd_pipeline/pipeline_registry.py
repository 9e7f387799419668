"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sdkd_pipeline.pipelines import data, download
from sdkd_pipeline.pipelines.selection import datasets_with, enabled_datasets


def register_pipelines() -> dict[str, Pipeline]:
    """``data`` for the enabled datasets; ``download`` for those of them with download
    parameters; ``__default__`` runs every stage (downloads are explicit, never implied)."""
    datasets = enabled_datasets()
    data_pipeline = data.create_pipeline(datasets)
    return {
        "data": data_pipeline,
        "download": download.create_pipeline(datasets_with("download", datasets)),
        "__default__": data_pipeline,
    }
