"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from sdkd_pipeline.pipelines import data
from sdkd_pipeline.pipelines.selection import enabled_datasets


def register_pipelines() -> dict[str, Pipeline]:
    """``data`` for the enabled datasets; ``__default__`` runs every stage."""
    datasets = enabled_datasets()
    data_pipeline = data.create_pipeline(datasets)
    return {"data": data_pipeline, "__default__": data_pipeline}
