"""``kedro run --pipelines=distill``: every enabled student with every method on every dataset."""

from sdkd_pipeline.pipelines.distill.pipeline import create_pipeline

__all__ = ["create_pipeline"]
