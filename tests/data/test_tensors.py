"""Tensor layer: splits, windows, training-only statistics, and the Zarr store round trip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.store import (
    check_store_dataset,
    load_store_in_memory,
    open_store,
    write_store,
)
from sdkd_pipeline.data.tensors import (
    SplitConfig,
    StoreConfig,
    WindowConfig,
    build_tensor_dataset,
    default_chunk_time,
    parse_splits,
    split_ranges,
    windows_in_ranges,
)
from sdkd_pipeline.errors import ConfigError, DataError


def make_series(
    n_traj: int = 1,
    n_time: int = 60,
    channels: tuple[str, ...] = ("a", "b"),
    size: int = 4,
    segment: np.ndarray | None = None,
    seed: int = 0,
    dataset: str = "demo",
) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    fields = rng.standard_normal((n_traj, n_time, len(channels), size, size)).astype(np.float32)
    return make_raw(
        fields,
        dataset=dataset,
        source=f"test:{dataset}",
        channels=list(channels),
        time=np.arange(n_time, dtype=np.float64),
        segment=segment,
    )


# ------------------------------------------------------------------------------------ splits


def test_trajectory_split_fractions_in_order():
    raw = make_series(n_traj=8, n_time=20)
    ranges = split_ranges(raw, SplitConfig(0.75, 0.125, 0.125), WindowConfig(5, 5))
    assert ranges == {
        "train": [(t, 0, 20) for t in range(6)],
        "val": [(6, 0, 20)],
        "test": [(7, 0, 20)],
    }


def test_trajectory_split_shuffled_is_seeded_and_a_partition():
    raw = make_series(n_traj=20, n_time=12)
    split = SplitConfig(0.6, 0.2, 0.2, shuffle_trajectories=True, seed=3)
    a = split_ranges(raw, split, WindowConfig(3, 3))
    b = split_ranges(raw, split, WindowConfig(3, 3))
    c = split_ranges(
        raw, SplitConfig(0.6, 0.2, 0.2, shuffle_trajectories=True, seed=4), WindowConfig(3, 3)
    )
    assert a == b and a != c
    trajs = {name: [r[0] for r in rs] for name, rs in a.items()}
    assert [len(trajs[n]) for n in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(sum(trajs.values(), [])) == list(range(20))
    assert trajs["train"] != list(range(12))  # actually shuffled


def test_trajectory_split_counts_like_taxibj_plus():
    raw = make_series(n_traj=10, n_time=8)
    ranges = split_ranges(raw, SplitConfig(6, 2, 1), WindowConfig(4, 4))
    assert [r[0] for r in ranges["train"]] == list(range(6))
    assert [r[0] for r in ranges["val"]] == [6, 7]
    assert [r[0] for r in ranges["test"]] == [8]  # trajectory 9 left unused by the counts
    with pytest.raises(ConfigError, match=r"demo\.split: counts.*need 11 trajectories.*10"):
        split_ranges(raw, SplitConfig(6, 2, 3), WindowConfig(4, 4))


def test_single_series_split_has_gap_of_one_window_by_default():
    raw = make_series(n_time=100)
    window = WindowConfig(4, 3)
    ranges = split_ranges(raw, SplitConfig(0.6, 0.2, 0.2), window)
    ((_, tr0, tr1),) = ranges["train"]
    ((_, va0, va1),) = ranges["val"]
    ((_, te0, te1),) = ranges["test"]
    assert tr0 == 0 and te1 == 100
    assert va0 - tr1 == window.length and te0 - va1 == window.length
    assert (tr1 - tr0, va1 - va0, te1 - te0) == (51, 17, 18)  # of 100 - 2 * 7 usable steps
    wider = split_ranges(raw, SplitConfig(0.6, 0.2, 0.2, gap=10), window)
    assert wider["val"][0][1] - wider["train"][0][2] == 10


def test_single_series_counts_are_time_steps():
    raw = make_series(n_time=50)
    ranges = split_ranges(raw, SplitConfig(20, 8, 8, gap=5), WindowConfig(2, 2))
    assert ranges == {"train": [(0, 0, 20)], "val": [(0, 25, 33)], "test": [(0, 38, 46)]}
    with pytest.raises(ConfigError, match=r"demo\.split: counts.*need 52 time steps.*50"):
        split_ranges(raw, SplitConfig(30, 8, 4, gap=5), WindowConfig(2, 2))


def test_ranges_are_cut_at_segment_boundaries():
    segment = np.repeat([0, 1, 2], [30, 5, 45])
    raw = make_series(n_time=80, segment=segment)
    ranges = split_ranges(raw, SplitConfig(0.5, 0.25, 0.25), WindowConfig(2, 2))
    # train is [0, 36): the segment changes at 30 and 35
    assert ranges["train"] == [(0, 0, 30), (0, 30, 35), (0, 35, 36)]


@pytest.mark.parametrize(
    ("n_traj", "t_in", "t_out", "stride", "segment_sizes"),
    [
        (1, 3, 2, 1, [17, 3, 40, 9, 31]),
        (1, 2, 2, 3, [50, 50]),
        (1, 5, 5, 2, [100]),
        (6, 2, 3, 1, [4, 12, 14]),
    ],
)
def test_no_window_crosses_splits_gaps_or_segments(n_traj, t_in, t_out, stride, segment_sizes):
    segment = np.repeat(np.arange(len(segment_sizes)), segment_sizes)
    n_time = len(segment)
    raw = make_series(n_traj=n_traj, n_time=n_time, segment=segment)
    window = WindowConfig(t_in, t_out, stride)
    ranges = split_ranges(raw, SplitConfig(0.6, 0.2, 0.2), window)
    owner = -np.ones((n_traj, n_time), dtype=int)  # which split owns each (trajectory, time)
    for k, name in enumerate(("train", "val", "test")):
        for traj, t0, t1 in ranges[name]:
            assert (owner[traj, t0:t1] == -1).all(), "ranges overlap"
            owner[traj, t0:t1] = k
    for k, name in enumerate(("train", "val", "test")):
        windows = windows_in_ranges(ranges[name], t_in, t_out, stride)
        assert len(windows) > 0
        steps = set()
        for traj, start in windows:
            span = np.arange(start, start + window.length)
            assert (owner[traj, span] == k).all()
            assert len(set(segment[span])) == 1, "window spans a gap in the time axis"
            steps.add((traj, start))
        # exhaustive: every stride-aligned start that fits one range is present
        expected = {
            (traj, s)
            for traj, t0, t1 in ranges[name]
            for s in range(t0, t1 - window.length + 1, stride)
        }
        assert steps == expected
    if n_traj == 1:  # the gaps between single-series splits hold no split at all
        gaps = np.flatnonzero(owner[0] == -1)
        assert len(gaps) >= 2 * window.length


# ----------------------------------------------------------------------- bad configurations


def test_gap_smaller_than_a_window_is_rejected():
    raw = make_series(n_time=100, dataset="weatherbench")
    with pytest.raises(ConfigError, match=r"weatherbench\.split\.gap = 6.*at least one window.*7"):
        split_ranges(raw, SplitConfig(0.6, 0.2, 0.2, gap=6), WindowConfig(4, 3))


def test_window_longer_than_series_is_rejected():
    raw = make_series(n_traj=3, n_time=15, dataset="taxibj")
    window = WindowConfig.from_params({"t_in": 10, "t_out": 8}, "taxibj.window")
    with pytest.raises(ConfigError, match=r"taxibj\.window\.t_in.*18 frames.*15 time steps"):
        split_ranges(raw, SplitConfig(), window)


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((0.7, 0.1, 0.1), r"navier_stokes\.split: fractions must sum to 1.*sum 0\.9"),
        ((0.7, 0.4, -0.1), r"navier_stokes\.split\.test must be >= 0, got -0\.1 \(a fraction"),
        ((0.8, "x", 0.1), r"navier_stokes\.split\.val must be an integer or a number, got 'x'"),
        ((4, 2, 1.5), r"navier_stokes\.split: fractions must sum to 1"),
    ],
)
def test_bad_split_sizes(sizes, message):
    params = dict(zip(("train", "val", "test"), sizes, strict=True))
    with pytest.raises(ConfigError, match=message):
        SplitConfig.from_params(params, "navier_stokes.split")
    # a split built in code is checked where its dataset, and so its parameter path, is known
    raw = make_series(n_traj=8, n_time=10, dataset="navier_stokes")
    with pytest.raises(ConfigError, match=message):
        split_ranges(raw, SplitConfig(*sizes), WindowConfig(2, 2))


def test_split_without_a_window_names_split_and_numbers():
    raw = make_series(n_traj=8, n_time=10, dataset="navier_stokes")
    with pytest.raises(ConfigError, match=r"navier_stokes\.split\.test.*gets 0 of 8 trajectories"):
        split_ranges(raw, SplitConfig(0.5, 0.5, 0.0), WindowConfig(2, 2))
    series = make_series(n_time=40)
    # 40 - 2 * 6 = 28 usable steps: val gets int(0.1 * 28) = 2 steps < one window of 6; named
    # with the series length, the gap, the rule and settings that fit (windows of 3: val 3)
    with pytest.raises(
        ConfigError,
        match=r"demo\.split: one series of 40 time steps cannot be split .*val 2.*t_in \+ t_out "
        r"= 6 steps, with gaps of 6 .*at least 30 steps.*Settings that fit: windows of at most 3 "
        r"frames, e\.g\. t_in = t_out = 1",
    ):
        split_ranges(series, SplitConfig(0.8, 0.1, 0.1), WindowConfig(3, 3))
    split_ranges(series, SplitConfig(0.8, 0.1, 0.1), WindowConfig(2, 1))  # the proposal fits
    # one trajectory of 30 frames (a The Well RBC file) with 10 -> 10 windows
    with pytest.raises(ConfigError, match=r"one series of 30 time steps .*at least 100 steps"):
        split_ranges(make_series(n_time=30), SplitConfig(0.8, 0.1, 0.1), WindowConfig(10, 10))
    gappy = make_series(n_time=40, segment=np.repeat([0, 1, 2, 3], [20, 3, 3, 14]))
    # val [23, 26) after the cut holds a segment of length 3: no window of 4 fits
    with pytest.raises(ConfigError, match=r"demo\.split\.val.*gap-free pieces"):
        split_ranges(gappy, SplitConfig(14, 3, 10, gap=4), WindowConfig(2, 2))


def test_bad_window_and_unknown_keys():
    with pytest.raises(ConfigError, match=r"^ns\.window\.stride must be >= 1, got 0$"):
        WindowConfig.from_params({"t_in": 2, "t_out": 2, "stride": 0}, "ns.window")
    with pytest.raises(ConfigError, match=r"^ns\.window\.t_out must be an integer, got 2\.5$"):
        WindowConfig.from_params({"t_in": 2, "t_out": 2.5}, "ns.window")
    with pytest.raises(ConfigError, match=r"^ns\.window\.t_out: required parameter missing$"):
        WindowConfig.from_params({"t_in": 2}, "ns.window")
    with pytest.raises(ConfigError, match=r"^window\.t_in must be >= 1, got 0$"):
        WindowConfig(0, 2)  # built in code: checked too
    with pytest.raises(
        ConfigError,
        match=r"^ns\.split\.trian: unknown parameter \(allowed: gap, seed, shuffle_trajectories, "
        r"test, train, val\)$",
    ):
        SplitConfig.from_params({"trian": 0.8}, "ns.split")
    with pytest.raises(ConfigError, match=r"^ns\.store\.chunk_tim: unknown parameter"):
        StoreConfig.from_params({"chunk_tim": 4}, "ns.store")
    with pytest.raises(ConfigError, match=r"^ns\.store\.chunk_time must be >= 1, got 0$"):
        StoreConfig.from_params({"chunk_time": 0}, "ns.store")
    assert StoreConfig.from_params(None, "ns.store").chunk_time is None
    # YAML-style whole floats are counts; an int stays a count and a float a fraction
    window = WindowConfig.from_params({"t_in": 4.0, "t_out": 2}, "ns.window")
    assert (window.t_in, type(window.t_in), window.param_path) == (4, int, "ns.window")
    split = SplitConfig.from_params({"train": 6, "val": 2, "test": 1}, "ns.split")
    assert split.kind() == "count" and split.param_path == "ns.split"
    assert (
        SplitConfig.from_params({"train": 1.0, "val": 0.0, "test": 0.0}, "s").kind() == "fraction"
    )
    with pytest.raises(ConfigError, match=r"^demo\.store\.chunk_time must be >= 1, got 0$"):
        build_tensor_dataset(
            make_series(n_traj=4, n_time=10),
            split=SplitConfig(0.5, 0.25, 0.25),
            window=WindowConfig(2, 2),
            chunk_time=0,
        )


# --------------------------------------------------------------------------- the tensor data


def test_statistics_come_from_training_split_only():
    rng = np.random.default_rng(1)
    n_traj, n_time = 8, 12
    fields = np.empty((n_traj, n_time, 2, 5, 5), dtype=np.float32)
    fields[:6] = rng.normal([3.0, -50.0], [2.0, 0.5], size=(6, n_time, 5, 5, 2)).transpose(
        0, 1, 4, 2, 3
    )
    fields[6:] = rng.normal(1000.0, 300.0, size=(2, n_time, 2, 5, 5))  # val/test: very different
    raw = make_raw(
        fields,
        dataset="ns",
        source="test",
        channels=["u", "v"],
        time=np.arange(n_time, dtype=float),
    )
    ds = build_tensor_dataset(raw, split=SplitConfig(0.75, 0.125, 0.125), window=WindowConfig(3, 3))
    train = fields[:6].astype(np.float64)
    np.testing.assert_allclose(ds["mean"].values, train.mean(axis=(0, 1, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(ds["std"].values, train.std(axis=(0, 1, 3, 4)), rtol=1e-5)
    normalized = ds["fields"].values[:6]
    np.testing.assert_allclose(normalized.mean(axis=(0, 1, 3, 4)), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.std(axis=(0, 1, 3, 4)), 1.0, atol=1e-5)


def test_single_series_statistics_skip_val_test_and_gaps():
    n_time = 60
    fields = np.zeros((1, n_time, 1, 3, 3), dtype=np.float32)
    values = np.arange(n_time, dtype=np.float32)
    fields[0, :, 0] = values[:, None, None] + np.linspace(0, 1, 9, dtype=np.float32).reshape(3, 3)
    raw = make_raw(
        fields,
        dataset="weather",
        source="test",
        channels=["t2m"],
        time=np.arange(n_time, dtype=float),
    )
    ds = build_tensor_dataset(raw, split=SplitConfig(0.5, 0.25, 0.25), window=WindowConfig(2, 2))
    ((_, t0, t1),) = parse_splits(ds.attrs["splits"])["train"]
    expected = fields[0, t0:t1].astype(np.float64)
    assert (t0, t1) == (0, 26)
    np.testing.assert_allclose(ds["mean"].values, [expected.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds["std"].values, [expected.std()], rtol=1e-5)
    assert ds.attrs["split_method"] == "time" and ds.attrs["split_gap"] == 4


def test_constant_training_channel_is_a_data_error():
    raw = make_series(n_traj=4, n_time=6, channels=("ok", "flat"))
    fields = raw["fields"].values.copy()
    fields[:, :, 1] = 7.0
    raw = raw.copy(data={"fields": fields})
    with pytest.raises(DataError, match=r"test:demo: channel\(s\) 'flat' are constant"):
        build_tensor_dataset(raw, split=SplitConfig(0.5, 0.25, 0.25), window=WindowConfig(2, 2))


def test_raw_dataset_is_validated_first():
    raw = make_series(n_traj=4, n_time=6)
    fields = raw["fields"].values.copy()
    fields[2, 3, 0, 1, 1] = np.nan
    bad = raw.copy(data={"fields": fields})
    with pytest.raises(DataError, match=r"test:demo: 1 NaN/Inf"):
        build_tensor_dataset(bad, split=SplitConfig(0.5, 0.25, 0.25), window=WindowConfig(2, 2))


def test_build_is_lazy_chunked_and_records_the_contract():
    n_time = 40
    raw = make_raw(
        np.random.default_rng(0).random((1, n_time, 1, 4, 6), dtype=np.float32) * 10,
        dataset="weatherbench",
        source="wb.nc",
        channels=["2m_temperature"],
        time=np.datetime64("2015-01-01T00") + np.arange(n_time) * np.timedelta64(1, "h"),
        y=np.linspace(-80, 80, 4),
        x=np.linspace(0, 300, 6),
        extra_coords={"lat": ("y", np.linspace(-80, 80, 4)), "lon": ("x", np.linspace(0, 300, 6))},
        segment=np.repeat([0, 1], [25, 15]),
        attrs={"variable": "t2m"},
    )
    ds = build_tensor_dataset(
        raw, split=SplitConfig(0.5, 0.25, 0.25), window=WindowConfig(2, 3, 2), chunk_time=7
    )
    assert isinstance(ds["fields"].data, da.Array)
    assert ds["fields"].data.chunks[1] == (7, 7, 7, 7, 7, 5)
    assert ds["fields"].data.chunksize == (1, 7, 1, 4, 6)
    assert ds["fields"].dtype == np.float32 and ds["mean"].dtype == np.float32
    for name in ("channel", "time", "y", "x", "lat", "lon", "segment", "trajectory"):
        np.testing.assert_array_equal(ds[name].values, raw[name].values)
    attrs = ds.attrs
    assert (attrs["t_in"], attrs["t_out"], attrs["stride"]) == (2, 3, 2)
    assert attrs["split_method"] == "time" and attrs["format_version"] == 1
    assert attrs["variable"] == "t2m" and attrs["source"] == "wb.nc"
    assert "training split" in attrs["normalization"]
    splits = json.loads(attrs["splits"])
    assert set(splits) == {"train", "val", "test"}
    np.testing.assert_allclose(
        ds["fields"].values * ds["std"].values[:, None, None] + ds["mean"].values[:, None, None],
        raw["fields"].values,
        rtol=1e-5,
        atol=1e-5,
    )


def test_default_chunk_time_targets_about_2_mb():
    assert default_chunk_time(30, 64 * 64 * 4, 20) == 30  # NS: the whole trajectory (480 kB)
    assert default_chunk_time(100_000, 32 * 64 * 4, 24) == 256  # WeatherBench: 2 MB
    assert default_chunk_time(24, 128 * 128 * 2 * 4, 24) == 24  # TaxiBJ+: >= one window
    assert default_chunk_time(10_000, 2048 * 2048 * 4, 8) == 8


# ---------------------------------------------------------------------------------- the store


@pytest.fixture
def tensors():
    raw = make_series(n_traj=6, n_time=20, size=5)
    return build_tensor_dataset(
        raw, split=SplitConfig(4, 1, 1), window=WindowConfig(3, 2), chunk_time=8
    )


@pytest.mark.filterwarnings("ignore:The data type.*does not have a Zarr V3 specification")
@pytest.mark.parametrize(
    ("compressor", "zarr_format"), [("none", 2), ("blosc-lz4", 2), ("zstd", 3)]
)
def test_store_round_trip(tmp_path, tensors, compressor, zarr_format):
    path = write_store(
        tensors, tmp_path / "demo.zarr", compressor=compressor, zarr_format=zarr_format
    )
    opened = open_store(path)
    assert isinstance(opened["fields"].data, da.Array)
    assert opened["fields"].data.chunksize == (1, 8, 2, 5, 5)
    np.testing.assert_array_equal(opened["fields"].values, tensors["fields"].values)
    np.testing.assert_array_equal(opened["mean"].values, tensors["mean"].values)
    assert list(opened["channel"].values) == ["a", "b"]
    for key in ("t_in", "t_out", "stride", "splits", "split_method", "format_version", "dataset"):
        assert opened.attrs[key] == tensors.attrs[key]
    memory = load_store_in_memory(path)
    assert isinstance(memory["fields"].data, np.ndarray)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.zarr"]


def _failing(tensors: xr.Dataset) -> xr.Dataset:
    def explode(block, block_info=None):
        if block_info[0]["chunk-location"][:2] == (3, 1):
            raise RuntimeError("disk full (simulated)")
        return block

    bad = tensors.copy()
    bad["fields"] = bad["fields"].copy(
        data=bad["fields"].data.map_blocks(explode, dtype=np.float32)
    )
    return bad


def test_failed_write_keeps_old_store_and_leaves_no_temporary(tmp_path, tensors):
    path = tmp_path / "demo.zarr"
    write_store(tensors, path)
    before = open_store(path)["fields"].values
    with pytest.raises(RuntimeError, match="disk full"):
        write_store(_failing(tensors), path)
    np.testing.assert_array_equal(open_store(path)["fields"].values, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.zarr"]


def test_failed_first_write_leaves_nothing(tmp_path, tensors):
    with pytest.raises(RuntimeError, match="disk full"):
        write_store(_failing(tensors), tmp_path / "demo.zarr")
    assert list(tmp_path.iterdir()) == []


def test_killed_write_leaves_old_store_and_next_write_cleans_up(tmp_path, tensors):
    path = tmp_path / "demo.zarr"
    write_store(tensors, path)
    before = open_store(path)["fields"].values
    script = textwrap.dedent(f"""
        import time, dask, dask.array as da, numpy as np
        from sdkd_pipeline.data.store import open_store, write_store
        ds = open_store({str(path)!r}).load()
        def slow(block):
            time.sleep(0.5)
            return block
        ds["fields"] = ds["fields"].copy(data=da.from_array(ds["fields"].values,
                                         chunks=(1, 4, 2, 5, 5)).map_blocks(slow))
        with dask.config.set(scheduler="synchronous"):
            write_store(ds, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".demo.zarr.tmp-*/fields")):
            assert proc.poll() is None, "writer ended before it started writing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert list(tmp_path.glob(".demo.zarr.tmp-*")), "the killed writer left its temporary"
    np.testing.assert_array_equal(open_store(path)["fields"].values, before)
    write_store(tensors, path)  # the next write removes the dead writer's temporary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.zarr"]


@pytest.mark.bad_input
def test_write_refuses_to_replace_a_non_store_or_to_overwrite(tmp_path, tensors):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"results: exists and is not a Zarr store"):
        write_store(tensors, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    write_store(tensors, tmp_path / "demo.zarr")
    with pytest.raises(DataError, match=r"demo\.zarr: a store already exists"):
        write_store(tensors, tmp_path / "demo.zarr", overwrite=False)
    with pytest.raises(ConfigError, match="store.compressor"):
        write_store(tensors, tmp_path / "other.zarr", compressor="gzip9")
    with pytest.raises(DataError, match="missing variable"):
        write_store(tensors.drop_vars("mean"), tmp_path / "other.zarr")


def test_open_store_errors_name_the_path(tmp_path, tensors):
    with pytest.raises(DataError, match=r"nowhere\.zarr: no Zarr store there"):
        open_store(tmp_path / "nowhere.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match=r"plain: not a Zarr store"):
        open_store(tmp_path / "plain")
    no_splits = tensors.copy()
    no_splits.attrs = {k: v for k, v in tensors.attrs.items() if k != "splits"}
    no_splits.to_zarr(tmp_path / "nosplits.zarr", zarr_format=2)
    with pytest.raises(
        DataError, match=r"nosplits\.zarr: store attributes \['splits'\] are missing"
    ):
        open_store(tmp_path / "nosplits.zarr")
    tensors[["mean"]].to_zarr(tmp_path / "nofields.zarr", zarr_format=2)
    with pytest.raises(DataError, match=r"nofields\.zarr: not a tensor store.*fields"):
        open_store(tmp_path / "nofields.zarr")
    broken = tensors.copy()
    broken.attrs = {**tensors.attrs, "splits": "{not json"}
    with pytest.raises(DataError, match="'splits' is not valid split JSON"):
        check_store_dataset(broken, origin="x")


def test_tensors_build_in_memory_without_dask(tmp_path):
    """The bare GPU machine has no dask: the same statistics and windows come from numpy."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        for name in ("zarr", "dask", "numcodecs", "distributed"):
            sys.modules[name] = None
        import numpy as np
        from sdkd_pipeline.data.raw import make_raw
        from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
        from sdkd_pipeline.data.windows import WindowDataset
        rng = np.random.default_rng(0)
        raw = make_raw(rng.normal(5.0, 3.0, (8, 10, 2, 6, 4)), dataset="toy", source="t",
                       channels=["a", "b"], time=np.arange(10.0))
        ds = build_tensor_dataset(raw, split=SplitConfig(train=0.5, val=0.25, test=0.25),
                                  window=WindowConfig(t_in=3, t_out=2))
        train = raw["fields"].values[:4].astype(np.float64)
        assert np.allclose(ds["mean"].values, train.mean(axis=(0, 1, 3, 4)), atol=1e-6)
        assert np.allclose(ds["std"].values, train.std(axis=(0, 1, 3, 4)), atol=1e-6)
        x, y = WindowDataset(ds, "test")[0]
        print(tuple(x.shape), tuple(y.shape), len(WindowDataset(ds, "train")))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "(3, 2, 6, 4) (2, 2, 6, 4) 24"
