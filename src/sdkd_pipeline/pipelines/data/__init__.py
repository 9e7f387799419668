"""The data pipeline: raw source -> normalized, windowed Zarr store, one namespace per dataset."""

from sdkd_pipeline.pipelines.data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
