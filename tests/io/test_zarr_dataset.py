"""The Kedro Zarr dataset: round trip, contract checks, atomic saves."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.errors import DataError
from sdkd_pipeline.io import ZarrDataset


def _raw(n_traj=4, n_t=12, seed=0):
    rng = np.random.default_rng(seed)
    return make_raw(
        rng.normal(3.0, 2.0, size=(n_traj, n_t, 2, 8, 6)),
        dataset="toy",
        source="test",
        channels=["a", "b"],
        time=np.arange(n_t, dtype=float),
    )


def _tensors(raw):
    return build_tensor_dataset(
        raw,
        split=SplitConfig(train=0.5, val=0.25, test=0.25),
        window=WindowConfig(t_in=2, t_out=2),
    )


def test_round_trip_of_a_tensor_store(tmp_path):
    ds = ZarrDataset(filepath=str(tmp_path / "toy.zarr"))
    assert not ds.exists()
    tensors = _tensors(_raw())
    ds.save(tensors)
    assert ds.exists()
    loaded = ds.load()
    xr.testing.assert_allclose(loaded["fields"].compute(), tensors["fields"].compute())
    assert loaded.attrs["splits"] == tensors.attrs["splits"]
    assert loaded["fields"].chunks is not None  # lazy, dask-backed


def test_raw_kind_round_trip(tmp_path):
    ds = ZarrDataset(filepath=str(tmp_path / "raw.zarr"), kind="raw")
    raw = _raw()
    ds.save(raw)
    np.testing.assert_array_equal(ds.load()["fields"].values, raw["fields"].values)


@pytest.mark.bad_input
def test_a_raw_dataset_is_not_accepted_as_tensors(tmp_path):
    ds = ZarrDataset(filepath=str(tmp_path / "toy.zarr"))
    # Kedro wraps save errors in its DatasetError; our message (naming the path) is kept
    with pytest.raises(Exception, match="toy.zarr: not a tensor store") as info:
        ds.save(_raw())
    assert isinstance(info.value, DataError) or isinstance(info.value.__cause__, DataError)
    assert not list(tmp_path.iterdir())


def test_failed_save_keeps_the_previous_store(tmp_path):
    import dask.array as da

    ds = ZarrDataset(filepath=str(tmp_path / "toy.zarr"))
    good = _tensors(_raw(seed=1))
    ds.save(good)

    bad = _tensors(_raw(seed=2))

    def explode(block, block_info=None):
        if block_info and block_info[0]["chunk-location"][1] > 0:
            raise RuntimeError("disk full")
        return block

    bad["fields"] = bad["fields"].copy(
        data=da.map_blocks(
            explode,
            da.from_array(bad["fields"].values, chunks=(1, 4, 2, 8, 6)),
            dtype=np.float32,
        )
    )
    with pytest.raises(Exception, match="disk full"):
        ds.save(bad)
    np.testing.assert_array_equal(ds.load()["fields"].values, good["fields"].values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.zarr"]


def test_missing_store_names_the_path(tmp_path):
    with pytest.raises(Exception, match="nothing.zarr"):
        ZarrDataset(filepath=str(tmp_path / "nothing.zarr")).load()


def test_remote_protocols_are_refused():
    with pytest.raises(ValueError, match="s3"):
        ZarrDataset(filepath="s3://bucket/store.zarr")
