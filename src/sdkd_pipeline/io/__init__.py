"""Kedro datasets the project had to write (kedro-datasets has no Zarr dataset)."""

from sdkd_pipeline.io.checkpoint_dataset import TorchCheckpointDataset
from sdkd_pipeline.io.zarr_dataset import ZarrDataset

__all__ = ["TorchCheckpointDataset", "ZarrDataset"]
