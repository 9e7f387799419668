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


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` prefix, removed afterwards (fsspec's memory filesystem is global)."""
    import uuid

    import fsspec

    root = f"/sdkd-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{root}"
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_an_fsspec_url_round_trips_and_windows_read_it(memory_url):
    from sdkd_pipeline.data.windows import WindowDataset

    url = f"{memory_url}/toy.zarr"
    ds = ZarrDataset(filepath=url)
    assert ds.path == url and not ds.exists()
    tensors = _tensors(_raw())
    ds.save(tensors)
    assert ds.exists()
    loaded = ds.load()
    np.testing.assert_array_equal(loaded["fields"].values, tensors["fields"].values)
    assert loaded.encoding["store_path"] == url
    windows = WindowDataset(loaded.encoding["store_path"], "train")
    x, y = windows[0]
    np.testing.assert_array_equal(x.numpy(), tensors["fields"].values[0, 0:2])
    import fsspec

    # nothing but the store is left: the temporary prefix was moved onto the target
    assert [
        p.rsplit("/", 1)[-1] for p in fsspec.filesystem("memory").ls(memory_url[9:], detail=False)
    ] == ["toy.zarr"]


def test_a_failed_save_to_a_url_keeps_the_previous_store(memory_url):
    import dask.array as da
    import fsspec

    ds = ZarrDataset(filepath=f"{memory_url}/toy.zarr", fs_args={"skip_instance_cache": False})
    good = _tensors(_raw(seed=1))
    ds.save(good)
    bad = _tensors(_raw(seed=2))

    def explode(block, block_info=None):
        if block_info and block_info[0]["chunk-location"][1] > 0:
            raise RuntimeError("bucket full")
        return block

    bad["fields"] = bad["fields"].copy(
        data=da.map_blocks(
            explode, da.from_array(bad["fields"].values, chunks=(1, 4, 2, 8, 6)), dtype=np.float32
        )
    )
    with pytest.raises(Exception, match="bucket full"):
        ds.save(bad)
    np.testing.assert_array_equal(ds.load()["fields"].values, good["fields"].values)
    assert "store_path" not in ds.load().encoding  # fs_args given: read from the dataset
    names = fsspec.filesystem("memory").ls(memory_url[9:], detail=False)
    assert [p.rsplit("/", 1)[-1] for p in names] == ["toy.zarr"]


def test_a_file_url_is_a_local_path(tmp_path):
    ds = ZarrDataset(filepath=f"file://{tmp_path}/toy.zarr")
    assert ds.path == tmp_path / "toy.zarr"
    ds.save(_tensors(_raw()))
    assert (tmp_path / "toy.zarr" / ".zgroup").is_file()


@pytest.mark.bad_input
def test_a_url_whose_filesystem_is_not_installed_names_the_url():
    from sdkd_pipeline.errors import ConfigError

    with pytest.raises(Exception, match=r"nosuchfs://bucket/store\.zarr: cannot open") as info:
        ZarrDataset(filepath="nosuchfs://bucket/store.zarr").load()
    assert isinstance(info.value, ConfigError) or isinstance(info.value.__cause__, ConfigError)
