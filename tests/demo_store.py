"""A tiny tensor store for tests of the CLIs: 6 trajectories of 10 random 16x16 frames, one
channel, split 4 / 1 / 1 by trajectory, 3 -> 3 windows, written as Zarr and as NetCDF."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_demo_store(root: Path) -> tuple[Path, Path]:
    """The demo store under ``root``: ``(zarr_path, netcdf_path)``."""
    from sdkd_pipeline.data.raw import make_raw
    from sdkd_pipeline.data.store import load_store_in_memory, write_store
    from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset

    fields = np.random.default_rng(3).normal(size=(6, 10, 1, 16, 16)).astype(np.float32)
    raw = make_raw(fields, dataset="demo", source="test:demo", channels=["w"], time=np.arange(10.0))
    tensors = build_tensor_dataset(raw, split=SplitConfig(4, 1, 1), window=WindowConfig(3, 3))
    zarr_path, netcdf = root / "demo.zarr", root / "demo.nc"
    load_store_in_memory(write_store(tensors, zarr_path)).to_netcdf(netcdf)
    return zarr_path, netcdf
