"""The teacher pipeline: one training run per (dataset, teacher), namespaced ``<dataset>.<model>``."""

from sdkd_pipeline.pipelines.teacher.pipeline import create_pipeline

__all__ = ["create_pipeline"]
