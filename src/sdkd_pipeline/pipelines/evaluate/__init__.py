"""Evaluation of every teacher and student of a dataset on its test split."""

from sdkd_pipeline.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
