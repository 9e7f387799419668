"""Teacher training uses the shared training node."""

from sdkd_pipeline.pipelines.forecaster import load_forecaster, train_forecaster

__all__ = ["load_forecaster", "train_forecaster"]
