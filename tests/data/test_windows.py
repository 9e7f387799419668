"""The torch Dataset of windows over a tensor store (Zarr path or in-memory xarray)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.store import load_store_in_memory, write_store
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import ChunkPoolSampler, WindowDataset
from sdkd_pipeline.errors import ConfigError, DataError

T_IN, T_OUT = 3, 2


def _raw(n_traj: int = 6, n_time: int = 23, size: int = 5) -> xr.Dataset:
    rng = np.random.default_rng(7)
    fields = rng.normal([10.0, -3.0], [4.0, 0.1], size=(n_traj, n_time, size, size, 2))
    return make_raw(
        fields.transpose(0, 1, 4, 2, 3).astype(np.float32),
        dataset="demo",
        source="test:demo",
        channels=["u", "v"],
        time=np.arange(n_time, dtype=np.float64) * 0.5,
    )


@pytest.fixture(scope="module")
def raw() -> xr.Dataset:
    return _raw()


@pytest.fixture(scope="module")
def store(raw, tmp_path_factory):
    # chunk_time 4 < window length 5: many windows span two chunks
    tensors = build_tensor_dataset(
        raw, split=SplitConfig(4, 1, 1), window=WindowConfig(T_IN, T_OUT), chunk_time=4
    )
    return write_store(tensors, tmp_path_factory.mktemp("store") / "demo.zarr")


def _expected(raw: xr.Dataset, ds: WindowDataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    traj, t0 = ds.windows[index]
    block = raw["fields"].values[traj, t0 : t0 + ds.t_in + ds.t_out]
    normalized = (block - ds.mean.numpy()[:, None, None]) / ds.std.numpy()[:, None, None]
    return normalized[: ds.t_in], normalized[ds.t_in :]


@pytest.mark.parametrize("cache_mb", [256.0, 0.0, 0.002])
def test_items_are_normalized_windows_of_the_split(raw, store, cache_mb):
    ds = WindowDataset(store, "train", cache_mb=cache_mb)
    assert len(ds) == 4 * (23 - 5 + 1)
    assert set(ds.windows[:, 0].tolist()) == {0, 1, 2, 3}
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (T_IN, 2, 5, 5) and y.shape == (T_OUT, 2, 5, 5)
        assert x.dtype == torch.float32
        ex, ey = _expected(raw, ds, i)
        np.testing.assert_allclose(x.numpy(), ex, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y.numpy(), ey, rtol=1e-5, atol=1e-5)
    batch = ds.__getitems__([5, 0, 40, 5, 71])
    for (x, y), i in zip(batch, [5, 0, 40, 5, 71], strict=True):
        torch.testing.assert_close(x, ds[i][0])
        torch.testing.assert_close(y, ds[i][1])


def test_cache_is_bounded(store):
    ds = WindowDataset(store, "train", cache_mb=0.002)  # 2 kB: two chunks of 4x2x5x5 floats
    for i in range(len(ds)):
        ds[i]
    assert ds._cached_bytes == sum(chunk.nbytes for chunk in ds._cache.values())
    assert ds._cached_bytes <= 0.002 * 1024**2
    assert list(ds._cache) == [(3, 4), (3, 5)]  # the two chunks of the last window


def test_items_can_be_modified_without_corrupting_the_data(store):
    ds = WindowDataset(store, "val")
    x, _ = ds[0]
    reference = x.clone()
    x.fill_(1e6)
    torch.testing.assert_close(ds[0][0], reference)


def test_denormalize_round_trips_to_raw_values(raw, store):
    ds = WindowDataset(store, "test")
    x, y = ds[3]
    traj, t0 = ds.windows[3]
    physical = raw["fields"].values[traj, t0 : t0 + T_IN + T_OUT]
    np.testing.assert_allclose(
        ds.denormalize(torch.cat([x, y])).numpy(), physical, rtol=1e-5, atol=1e-4
    )
    batch = torch.stack([x, x])[:, None]  # any leading dims: (2, 1, T_in, C, H, W)
    np.testing.assert_allclose(
        ds.denormalize(batch)[1, 0].numpy(), physical[:T_IN], rtol=1e-5, atol=1e-4
    )
    torch.testing.assert_close(ds.normalize(ds.denormalize(x)), x, rtol=1e-5, atol=1e-5)
    assert ds.denormalize(x.double()).dtype == torch.float64
    with pytest.raises(DataError, match=r"expected a \(\.\.\., C=2, H, W\) tensor"):
        ds.denormalize(torch.zeros(4, 3, 5, 5))


def test_metadata(store, raw):
    ds = WindowDataset(store, "train")
    assert ds.channels == ["u", "v"]
    assert ds.mean.shape == (2,) and ds.std.shape == (2,)
    assert abs(float(ds.mean[0]) - 10.0) < 0.5 and abs(float(ds.std[1]) - 0.1) < 0.01
    np.testing.assert_array_equal(ds.coords["time"], raw["time"].values)
    assert set(ds.coords) >= {"channel", "time", "y", "x", "trajectory"}
    t_in, t_out = ds.window_times(1)
    np.testing.assert_array_equal(t_in, [0.5, 1.0, 1.5])
    np.testing.assert_array_equal(t_out, [2.0, 2.5])
    assert "split='train'" in repr(ds)


def test_window_overrides_and_errors(store):
    ds = WindowDataset(store, "val", t_in=2, t_out=1, stride=4)
    assert ds.windows.tolist() == [[4, t] for t in range(0, 21, 4)]
    assert ds[1][0].shape == (2, 2, 5, 5) and ds[1][1].shape == (1, 2, 5, 5)
    with pytest.raises(ConfigError, match=r"split 'validation' is unknown; use one of train"):
        WindowDataset(store, "validation")
    with pytest.raises(ConfigError, match=r"'val'.*holds no window of t_in \+ t_out = 30"):
        WindowDataset(store, "val", t_in=20, t_out=10)
    with pytest.raises(ConfigError, match=r"^WindowDataset\.stride must be >= 1, got 0$"):
        WindowDataset(store, "val", stride=0)
    with pytest.raises(DataError, match=r"missing\.zarr: no Zarr store there"):
        WindowDataset(store.parent / "missing.zarr", "train")


def test_pickles_as_a_path(store):
    ds = WindowDataset(store, "train")
    ds[0]  # opens zarr and fills the cache
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the fields are never part of the pickle
    clone = pickle.loads(blob)
    assert clone._zarr is None and not clone._cache
    torch.testing.assert_close(clone[9][1], ds[9][1])


def test_dataloader_with_two_workers_gives_the_same_windows(store):
    ds = WindowDataset(store, "train")

    def batches(workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            ds,
            batch_size=8,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(11),
        )
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == int(np.ceil(len(ds) / 8))
    for (xs, ys), (xp, yp) in zip(serial, parallel, strict=True):
        torch.testing.assert_close(xs, xp, rtol=0, atol=0)
        torch.testing.assert_close(ys, yp, rtol=0, atol=0)
    flat = torch.cat([x for x, _ in serial])
    assert torch.unique(flat.reshape(len(flat), -1), dim=0).shape[0] == len(ds)


def test_in_memory_dataset_matches_the_store(store):
    memory = load_store_in_memory(store)
    from_store = WindowDataset(store, "val")
    in_memory = WindowDataset(memory, "val")
    assert in_memory.path is None and len(in_memory) == len(from_store)
    for i in range(len(in_memory)):
        for a, b in zip(in_memory[i], from_store[i], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(DataError, match="in-memory tensor dataset: store attributes"):
        WindowDataset(memory.drop_attrs(), "val")


def test_in_memory_dataset_works_without_zarr_or_dask(store, tmp_path):
    """The GPU box path: a NetCDF copy of the store read with neither zarr nor dask."""
    nc = tmp_path / "demo.nc"
    load_store_in_memory(store).to_netcdf(nc)
    script = textwrap.dedent(f"""
        import sys

        # a None entry makes `import zarr` fail and find_spec("zarr") report it missing,
        # exactly as on a machine where it is not installed
        for name in ("zarr", "dask", "numcodecs", "distributed"):
            sys.modules[name] = None
        import torch, xarray as xr
        from sdkd_pipeline.data.windows import ChunkPoolSampler, WindowDataset
        ds = WindowDataset(xr.open_dataset({str(nc)!r}).load(), "val")
        x, y = ds[2]
        print(len(ds), tuple(x.shape), tuple(y.shape), float(ds.denormalize(y).mean()))
        assert sys.modules["zarr"] is None and sys.modules["dask"] is None
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    reference = WindowDataset(store, "val")
    n, *_ = done.stdout.split()
    assert int(n) == len(reference)
    expected = float(reference.denormalize(reference[2][1]).mean())
    assert abs(float(done.stdout.split()[-1]) - expected) < 1e-4


class _CountingArray:
    """Wraps the zarr array to count reads."""

    def __init__(self, array) -> None:
        self.array, self.reads = array, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]


def test_chunk_pool_sampler_reads_each_chunk_about_once(store):
    ds = WindowDataset(store, "train", cache_mb=0.0016)  # room for two 800-byte chunks
    counter = _CountingArray(ds._array())
    ds._array = lambda: counter
    sampler = ChunkPoolSampler(ds, seed=1)
    assert sampler.pool_chunks == 1
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(ds)))
    assert first != second  # a new order every epoch
    assert list(ChunkPoolSampler(ds, seed=1)) == first  # deterministic from the seed
    for start in range(0, len(first), 8):
        ds.__getitems__(first[start : start + 8])
    n_chunks = 4 * 6  # 4 trajectories x ceil(23 / 4) chunks
    # each pool's chunk, plus the next chunk for windows straddling two
    assert counter.reads <= 2 * n_chunks
    counter.reads = 0
    for start in range(0, len(first), 8):
        ds.__getitems__(np.random.default_rng(0).permutation(len(ds))[start : start + 8])
    assert counter.reads > 2 * n_chunks  # a full shuffle with a small cache re-reads a lot
    loader = DataLoader(ds, batch_size=8, sampler=ChunkPoolSampler(ds, pool_mb=1.0), num_workers=2)
    assert sum(len(x) for x, _ in loader) == len(ds)
    with pytest.raises(ConfigError, match="pool_mb must be >= 0"):
        ChunkPoolSampler(ds, pool_mb=-1)


def test_a_truncated_chunk_names_the_store_the_variable_and_the_chunk(tmp_path):
    from sdkd_pipeline.errors import DataError
    from tests.demo_store import write_demo_store

    zarr_path, _ = write_demo_store(tmp_path)
    chunks = sorted(
        p
        for p in (zarr_path / "fields").rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != "zarr.json"
    )
    assert chunks, "no chunk files found"
    victim = chunks[0]
    victim.write_bytes(victim.read_bytes()[:17])  # one chunk cut short (a full disk, a copy)
    windows = WindowDataset(zarr_path, "train", cache_mb=0)
    with pytest.raises(
        DataError,
        match=r"demo\.zarr: variable 'fields', the chunk of "
        r"trajectory 0, time steps 0\.\.\d+, cannot be read.*"
        r"rebuild it with `kedro run --pipelines=data`",
    ):
        windows[0]
