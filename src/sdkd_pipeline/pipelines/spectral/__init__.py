"""The spectral pipeline: spectra of the data and of each teacher's latents, per (dataset,
teacher) under ``<dataset>.<teacher>``, and one table per dataset."""

from sdkd_pipeline.pipelines.spectral.pipeline import create_pipeline

__all__ = ["create_pipeline"]
