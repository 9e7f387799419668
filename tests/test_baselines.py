"""Persistence and climatology baselines on tiny synthetic stores, checked by hand (numpy)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.evaluation import evaluate_models, predict_windows, test_data_range
from sdkd_pipeline.evaluation.baselines import (
    Climatology,
    Persistence,
    build_baselines,
    time_of_day,
    training_runs,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T_IN, T_OUT, SIZE = 2, 2, 8  # SSIM's 11-point window needs at least 6x6


def _simulation_fields(seed: int = 0) -> np.ndarray:
    """(trajectory=4, time=9, channel=2, y, x) physical values, channels on different scales."""
    rng = np.random.default_rng(seed)
    fields = rng.normal(size=(4, 9, 2, SIZE, SIZE)) * np.array([3.0, 0.5])[:, None, None]
    return (fields + np.array([5.0, -2.0])[:, None, None]).astype(np.float32)


def _store(fields: np.ndarray, time: np.ndarray, split: SplitConfig, split_name: str = "test"):
    raw = make_raw(fields, dataset="demo", source="test:demo", channels=["u", "v"], time=time)
    tensors = build_tensor_dataset(raw, split=split, window=WindowConfig(T_IN, T_OUT)).load()
    return WindowDataset(tensors, split_name)


def _simulation(fields: np.ndarray, split_name: str = "test") -> WindowDataset:
    # trajectories in order: 0, 1 train, 2 val, 3 test
    time = np.arange(fields.shape[1], dtype=np.float64)
    return _store(fields, time, SplitConfig(2, 1, 1), split_name)


def _targets(fields: np.ndarray, windows: WindowDataset) -> np.ndarray:
    """The test targets (N, T_out, C, H, W) in physical units, straight from the raw fields."""
    return np.stack(
        [fields[traj, t0 + T_IN : t0 + T_IN + T_OUT] for traj, t0 in windows.windows]
    ).astype(np.float64)


def _mse(windows: WindowDataset, module: torch.nn.Module) -> float:
    data_range = test_data_range(windows, batch_size=3)
    return evaluate_models({"m": module}, windows, data_range, batch_size=3)["m"].mse


def test_persistence_repeats_the_last_input_frame_and_its_mse_by_hand():
    fields = _simulation_fields()
    windows = _simulation(fields)
    model = Persistence(T_OUT)
    x = torch.stack([windows[i][0] for i in range(len(windows))])
    out = model(x)
    assert out.shape == (len(windows), T_OUT, 2, SIZE, SIZE)
    assert all(torch.equal(out[:, k], x[:, -1]) for k in range(T_OUT))
    last = np.stack([fields[traj, t0 + T_IN - 1] for traj, t0 in windows.windows])
    expected = float(np.mean((last[:, None].astype(np.float64) - _targets(fields, windows)) ** 2))
    assert _mse(windows, model) == pytest.approx(expected, rel=1e-5)
    assert sum(p.numel() for p in model.parameters()) == 0


def test_climatology_is_the_mean_of_the_training_frames_counted_once():
    fields = _simulation_fields(1)
    windows = _simulation(fields)
    climatology = Climatology.fit(windows)
    assert not climatology.by_time_of_day and climatology.train_frames == 2 * 9
    expected = fields[:2].astype(np.float64).mean(axis=(0, 1))  # trajectories 0 and 1
    # each frame once, not once per window containing it (a window-weighted mean differs)
    train = _simulation(fields, "train")
    per_window = np.mean(
        [fields[traj, t0 : t0 + T_IN + T_OUT] for traj, t0 in train.windows], axis=(0, 1)
    )
    assert np.abs(per_window - expected).max() > 1e-2
    x = torch.zeros(len(windows), T_IN, 2, SIZE, SIZE)
    out = windows.denormalize(climatology(x, window_index=torch.arange(len(windows))))
    assert np.allclose(out.numpy(), expected[None, None], atol=1e-4)
    hand = float(np.mean((expected[None, None] - _targets(fields, windows)) ** 2))
    assert _mse(windows, climatology) == pytest.approx(hand, rel=1e-5)


def _simulation_store(fields: np.ndarray):
    raw = make_raw(
        fields,
        dataset="demo",
        source="test:demo",
        channels=["u", "v"],
        time=np.arange(fields.shape[1], dtype=np.float64),
    )
    return build_tensor_dataset(
        raw, split=SplitConfig(2, 1, 1), window=WindowConfig(T_IN, T_OUT)
    ).load()


def test_climatology_ignores_validation_and_test_frames():
    fields = _simulation_fields(2)
    before = _simulation(fields)
    spiked = fields.copy()
    spiked[2, 4] = 1e6  # a validation frame
    spiked[3, 6] = -1e6  # a test frame
    after = _simulation(spiked)
    means = [w.denormalize(Climatology.fit(w).means) for w in (before, after)]
    assert torch.allclose(means[0], means[1], rtol=1e-6, atol=1e-5)
    assert float(means[1].abs().max()) < 20.0


def _series(step: np.timedelta64, days: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory of ``days`` days at ``step``: a daily cycle (its own pattern per time of
    day and channel) plus noise."""
    per_day = int(np.timedelta64(1, "D") // step)
    n = per_day * days
    time = np.datetime64("2021-03-01T00:00") + np.arange(n) * step
    rng = np.random.default_rng(seed)
    cycle = rng.normal(size=(per_day, 2, SIZE, SIZE)) * 4.0
    fields = cycle[np.arange(n) % per_day] + rng.normal(size=(n, 2, SIZE, SIZE))
    return fields[None].astype(np.float32), time


@pytest.mark.parametrize(
    ("step", "days", "slots"),
    [(np.timedelta64(6, "h"), 12, 4), (np.timedelta64(30, "m"), 4, 48)],
    ids=["6-hourly", "half-hourly"],
)
def test_climatology_per_time_of_day(step, days, slots):
    fields, time = _series(step, days)
    windows = _store(fields, time, SplitConfig(0.5, 0.25, 0.25))
    climatology = Climatology.fit(windows)
    assert climatology.by_time_of_day and len(climatology.slots) == slots
    assert climatology.unmatched_targets == 0
    # by hand: the mean of the training frames at each time of day
    (train_range,) = json.loads(windows.attrs["splits"])["train"]
    _, t0, t1 = train_range
    seconds = (time - time.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.int64)
    train = np.arange(t0, t1)
    means = {
        s: fields[0, train[seconds[train] == s]].astype(np.float64).mean(axis=0)
        for s in np.unique(seconds[train])
    }
    assert len(means) == slots
    expected = np.stack(
        [
            np.stack([means[seconds[start + T_IN + k]] for k in range(T_OUT)])
            for _, start in windows.windows
        ]
    )
    x = torch.zeros(len(windows), T_IN, 2, SIZE, SIZE)
    out = windows.denormalize(climatology(x, window_index=torch.arange(len(windows))))
    assert np.allclose(out.numpy(), expected, atol=1e-4)
    hand = float(np.mean((expected - _targets(fields, windows)) ** 2))
    assert _mse(windows, climatology) == pytest.approx(hand, rel=1e-5)
    # the prediction panel passes the chosen windows' indices too
    _, panel = predict_windows({"c": climatology}, windows, [2, 0])
    assert np.allclose(panel["c"].numpy(), expected[[2, 0]], atol=1e-4)
    # the per-time-of-day forecast beats the all-times mean on a daily cycle
    plain = Climatology(climatology.means[:1], torch.zeros_like(climatology.lookup))
    assert _mse(windows, climatology) < 0.5 * _mse(windows, plain)

    # a huge value in a validation and a test frame does not move it
    val_t0 = json.loads(windows.attrs["splits"])["val"][0][1]
    spiked = fields.copy()
    spiked[0, val_t0] = 1e6
    spiked[0, -1] = -1e6
    after = Climatology.fit(_store(spiked, time, SplitConfig(0.5, 0.25, 0.25)))
    assert torch.allclose(after.means, climatology.means)
    assert torch.equal(after.lookup, climatology.lookup)


def test_climatology_window_index_contract():
    fields, time = _series(np.timedelta64(6, "h"), 12)
    windows = _store(fields, time, SplitConfig(0.5, 0.25, 0.25))
    climatology = Climatology.fit(windows)
    x = torch.zeros(3, T_IN, 2, SIZE, SIZE)
    # without indices: the all-times mean (row 0), e.g. for latency timing
    assert torch.equal(climatology(x), climatology.means[0].expand(3, T_OUT, 2, SIZE, SIZE))
    with pytest.raises(DataError, match="2 window indices for a batch of 3"):
        climatology(x, window_index=[0, 1])
    with pytest.raises(DataError, match="window index outside"):
        climatology(x, window_index=[0, 1, len(windows)])
    assert time_of_day(np.arange(3.0)) is None
    assert list(time_of_day(np.array(["2021-01-01T06:30", "NaT"], dtype="datetime64[m]"))) == [
        6 * 3600 + 1800,
        -1,
    ]


def test_a_time_of_day_never_seen_in_training_gets_the_all_times_mean():
    fields, time = _series(np.timedelta64(6, "h"), 12)
    half = len(time) // 2
    time = time.copy()
    time[half:] += np.timedelta64(3, "h")  # val and test at 03, 09, 15, 21 h only
    windows = _store(fields, time, SplitConfig(0.5, 0.25, 0.25))
    climatology = Climatology.fit(windows)
    assert len(climatology.slots) == 4
    assert climatology.unmatched_targets == len(windows) * T_OUT
    assert (climatology.lookup == 0).all()


def test_training_runs_merge_overlaps_and_count_frames_once():
    assert training_runs([(0, 0, 5), (0, 3, 8), (1, 2, 4), (0, 10, 12)], 2, 12) == [
        (0, 0, 8),
        (0, 10, 12),
        (1, 2, 4),
    ]


def test_frames_accessor_reads_any_split_from_memory_and_zarr(tmp_path):
    fields = _simulation_fields(3)
    store = _simulation_store(fields)
    windows = WindowDataset(store, "test")
    expected = store["fields"].values[1, 2:5]
    assert np.array_equal(windows.frames(1, 2, 5), expected)  # a training trajectory
    with pytest.raises(DataError, match="outside the store"):
        windows.frames(4, 0, 1)
    pytest.importorskip("zarr")
    from sdkd_pipeline.data.store import write_store

    path = write_store(store, tmp_path / "demo.zarr")
    on_disk = WindowDataset(path, "test")
    assert np.array_equal(on_disk.frames(1, 2, 5), expected)
    assert torch.allclose(Climatology.fit(on_disk).means, Climatology.fit(windows).means)


def test_build_baselines_names():
    windows = _simulation(_simulation_fields())
    assert list(build_baselines(windows)) == ["persistence", "climatology"]
    assert list(build_baselines(windows, ["climatology"])) == ["climatology"]
    assert build_baselines(windows, []) == {}
    with pytest.raises(ConfigError, match="evaluate.baselines"):
        build_baselines(windows, ["analogue"])


def test_baselines_import_without_kedro_mlflow_zarr_dask():
    code = (
        "import sys; import sdkd_pipeline.evaluation.baselines; "
        "bad = [m for m in ('kedro', 'mlflow', 'zarr', 'dask') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
