"""A Kedro dataset for xarray Datasets stored as Zarr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import xarray as xr
from kedro.io import AbstractDataset

from sdkd_pipeline.data.store import is_zarr_store, open_store, store_location, write_store


class ZarrDataset(AbstractDataset[xr.Dataset, xr.Dataset]):
    """Loads an ``xarray.Dataset`` lazily (dask-backed) from a Zarr store and saves one to it.

    ``kind`` is ``tensors`` (a normalized, split store: ``data/tensors.py``) or ``raw`` (a raw
    dataset in physical units: ``data/raw.py``); either is checked against its contract on load
    and save.

    Saving writes to a temporary sibling path and renames it into place once complete, so a
    failed or killed run leaves the previous store (or none), never a half-written one. Writes go
    through whichever Dask scheduler is active (the project's hook starts a LocalCluster or
    connects to a configured scheduler).

    ``filepath`` may be an fsspec URL (``s3://bucket/ns.zarr``, ``gs://...``, ``memory://...``;
    ``file://`` is a local path), with ``credentials`` and ``fs_args`` (merged, credentials
    winning) passed to fsspec as its storage options; see ``data/store.py`` for what a remote
    write guarantees.

    Example ``catalog.yml`` entry::

        "{name}.tensors":
          type: sdkd_pipeline.io.ZarrDataset
          filepath: data/05_model_input/{name}.zarr     # or s3://bucket/sdkd/{name}.zarr
    """

    def __init__(
        self,
        *,
        filepath: str,
        kind: str = "tensors",
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._path = store_location(filepath)
        self._kind = kind
        self._load_args = dict(load_args or {})
        self._save_args = dict(save_args or {})
        self._storage_options = {**(fs_args or {}), **(credentials or {})}
        self.metadata = metadata

    @property
    def path(self) -> Path | str:
        """The local ``Path``, or the fsspec URL of a remote store."""
        return self._path

    def _options(self) -> dict[str, Any]:
        return {"storage_options": self._storage_options} if self._storage_options else {}

    def load(self) -> xr.Dataset:
        ds = open_store(self.path, kind=self._kind, **self._options(), **self._load_args)
        if not self._storage_options:
            # training nodes hand the path (not the loaded arrays) to DataLoader workers; a
            # store that needs credentials is read from the loaded dataset instead
            ds.encoding["store_path"] = str(self.path)
        return ds

    def save(self, data: xr.Dataset) -> None:
        if not isinstance(data, xr.Dataset):
            raise TypeError(
                f"ZarrDataset({self.path}): expected an xarray.Dataset, got {type(data).__name__}"
            )
        write_store(data, self.path, kind=self._kind, **self._options(), **self._save_args)

    def _exists(self) -> bool:
        return is_zarr_store(self.path, self._storage_options or None)

    def _describe(self) -> dict[str, Any]:
        # credentials are not described (they would end up in logs)
        return {
            "filepath": str(self._path),
            "kind": self._kind,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }
