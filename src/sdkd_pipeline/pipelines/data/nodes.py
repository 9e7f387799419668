"""Nodes of the data pipeline: thin calls into ``sdkd_pipeline.data``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from sdkd_pipeline.data.forcings import check_forcings, store_forcings
from sdkd_pipeline.data.sources import load_raw
from sdkd_pipeline.data.tensors import (
    SplitConfig,
    StoreConfig,
    WindowConfig,
    build_tensor_dataset,
    default_chunk_time,
    windows_in_ranges,
)


def acquire_raw(dataset: str, source: dict[str, Any], progress: bool = True) -> xr.Dataset:
    """Generate or read the raw data of ``dataset`` as its ``source`` parameters say.

    The result is chunked along time (one trajectory per chunk, ~2 MB) so the raw store of a
    long series is not written as one giant chunk.
    """
    raw = load_raw(dataset, source, progress=progress)
    fields = raw["fields"]
    frame_bytes = int(np.prod(fields.shape[2:])) * fields.dtype.itemsize
    chunk_time = default_chunk_time(raw.sizes["time"], frame_bytes, 1)
    return raw.chunk({"trajectory": 1, "time": chunk_time})


def build_tensors(
    raw: xr.Dataset,
    window: dict[str, Any],
    split: dict[str, Any],
    store: dict[str, Any],
    forcings: list[str] | None = None,
) -> xr.Dataset:
    """Normalize with training statistics, split, and lay out for windowed reading; the
    declared forcings (``<dataset>.forcings``) are stored beside the fields."""
    dataset = raw.attrs.get("dataset", "dataset")
    return build_tensor_dataset(
        raw,
        split=SplitConfig.from_params(split, f"{dataset}.split"),
        window=WindowConfig.from_params(window, f"{dataset}.window"),
        chunk_time=StoreConfig.from_params(store, f"{dataset}.store").chunk_time,
        forcings=check_forcings(forcings, f"{dataset}.forcings"),
    )


def summarize_tensors(tensors: xr.Dataset) -> dict[str, Any]:
    """A small JSON report of the store: shape, channels, statistics, windows per split."""
    attrs = tensors.attrs
    splits = json.loads(attrs["splits"])
    t_in, t_out, stride = int(attrs["t_in"]), int(attrs["t_out"]), int(attrs["stride"])
    windows = {
        name: int(len(windows_in_ranges(ranges, t_in, t_out, stride)))
        for name, ranges in splits.items()
    }
    return {
        "dataset": attrs.get("dataset"),
        "source": attrs.get("source"),
        "shape": dict(tensors["fields"].sizes),
        "channels": [str(c) for c in tensors["channel"].values],
        "forcing_channels": store_forcings(tensors.attrs)["channels"],
        "mean": np.asarray(tensors["mean"].values, dtype=float).tolist(),
        "std": np.asarray(tensors["std"].values, dtype=float).tolist(),
        "t_in": t_in,
        "t_out": t_out,
        "stride": stride,
        "split_method": attrs.get("split_method"),
        "windows": windows,
    }
