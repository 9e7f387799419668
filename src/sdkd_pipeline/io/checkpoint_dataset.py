"""A Kedro dataset for model checkpoints (plain dicts of tensors and numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kedro.io import AbstractDataset

from sdkd_pipeline.atomic import atomic_path
from sdkd_pipeline.io.local_path import local_path


class TorchCheckpointDataset(AbstractDataset[dict, dict]):
    """Saves a checkpoint dict with ``torch.save`` atomically (temporary file, then rename) and
    loads it with ``weights_only=True``, so a checkpoint can never run code when opened.

    Example ``catalog.yml`` entry::

        "{dataset}.{model}.checkpoint":
          type: sdkd_pipeline.io.TorchCheckpointDataset
          filepath: data/06_models/{dataset}/{model}.pt
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = local_path(filepath, "TorchCheckpointDataset")
        self.metadata = metadata

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> dict:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no checkpoint there")
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise TypeError(f"{self.path}: a checkpoint must be a dict, got {type(data).__name__}")
        with atomic_path(self.path) as tmp:
            torch.save(data, tmp)

    def _exists(self) -> bool:
        return self.path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path)}
