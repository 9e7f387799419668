"""Forcings (``data/forcings.py``): input-only channels known in advance, stored beside the
fields, fed to every model after the forecast channels and never in a target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from sdkd_pipeline.data.forcings import (
    STATIC_VAR,
    TIME_VAR,
    check_forcings,
    clock_channels,
    forcing_inputs,
    position_channels,
    store_forcings,
)
from sdkd_pipeline.data.sources import load_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.evaluation.baselines import Persistence
from sdkd_pipeline.evaluation.rollout import rollout
from sdkd_pipeline.models import build_model
from tests.data.test_weatherbench import GRIB_SAMPLE

WINDOW = WindowConfig(t_in=4, t_out=3, stride=1)
SPLIT = SplitConfig(train=0.7, val=0.15, test=0.15)


@pytest.fixture(scope="module")
def era5_raw() -> xr.Dataset:
    return load_raw("weatherbench", {"kind": "era5", "era5": {"path": str(GRIB_SAMPLE)}}).load()


@pytest.fixture(scope="module")
def era5_store(era5_raw) -> xr.Dataset:
    store = build_tensor_dataset(
        era5_raw, split=SPLIT, window=WINDOW, forcings=("hour_of_day", "latitude", "longitude")
    )
    return store.compute()


def test_clock_channels_equal_a_hand_computation():
    times = np.array(["2019-03-01T00", "2019-03-01T06", "2019-03-01T18:30", "2020-12-31T12"])
    times = times.astype("datetime64[ns]")
    values, names = clock_channels(times, ("hour_of_day", "day_of_year"))
    assert names == ["hour_sin", "hour_cos", "doy_sin", "doy_cos"]
    hours = np.array([0.0, 6.0, 18.5, 12.0])
    np.testing.assert_allclose(values[:, 0], np.sin(2 * np.pi * hours / 24), atol=1e-6)
    np.testing.assert_allclose(values[:, 1], np.cos(2 * np.pi * hours / 24), atol=1e-6)
    # day of year: 1 March 2019 is day 60 of 365 (0-based 59); 31 Dec 2020 day 366 of 366
    days = np.array([59 + 0 / 24, 59 + 6 / 24, 59 + 18.5 / 24, 365 + 12 / 24])
    years = np.array([365, 365, 365, 366])
    np.testing.assert_allclose(values[:, 2], np.sin(2 * np.pi * days / years), atol=1e-6)
    np.testing.assert_allclose(values[:, 3], np.cos(2 * np.pi * days / years), atol=1e-6)


def test_position_channels_regional_and_global():
    lat, lon = np.linspace(50, 58, 5), np.linspace(-10, 2, 7)
    values, names = position_channels(lat, lon, ("latitude", "longitude"))
    assert names == ["lat", "lon"] and values.shape == (2, 5, 7)
    grid_lat = np.broadcast_to(lat[:, None], (5, 7))
    np.testing.assert_allclose(
        values[0], (grid_lat - grid_lat.mean()) / grid_lat.std(), rtol=1e-5, atol=1e-6
    )
    assert abs(values[1].mean()) < 1e-6 and values[1].std() == pytest.approx(1, rel=1e-5)
    # every column of a global grid: sin and cos of the longitude, smooth across the seam
    glob = np.arange(0.0, 360.0, 30.0)
    values, names = position_channels(np.array([-45.0, 45.0]), glob, ("longitude",))
    assert names == ["lon_sin", "lon_cos"]
    np.testing.assert_allclose(values[0, 0], np.sin(np.deg2rad(glob)), atol=1e-6)
    np.testing.assert_allclose(values[1, 1], np.cos(np.deg2rad(glob)), atol=1e-6)


def test_forcings_are_stored_with_their_own_coordinates_aligned_with_the_grib_time(
    era5_raw, era5_store
):
    info = store_forcings(era5_store.attrs)
    assert info["declared"] == ["hour_of_day", "latitude", "longitude"]
    assert info["channels"] == ["hour_sin", "hour_cos", "lat", "lon"]
    assert era5_store[TIME_VAR].dims == ("trajectory", "time", "time_forcing")
    assert list(era5_store["time_forcing"].values) == ["hour_sin", "hour_cos"]
    assert era5_store[STATIC_VAR].dims == ("static_forcing", "y", "x")
    assert list(era5_store["static_forcing"].values) == ["lat", "lon"]
    # the fields are untouched: the forcings are not among the channels (never targets)
    assert list(era5_store["channel"].values) == ["t2m"]
    # the hour encoded for every frame is the hour of the GRIB message's own valid time
    grib = xr.open_dataset(GRIB_SAMPLE, engine="cfgrib", backend_kwargs={"indexpath": ""})
    valid = np.asarray(grib["valid_time"].values if "valid_time" in grib else grib["time"].values)
    assert len(valid) == era5_store.sizes["time"]
    np.testing.assert_array_equal(era5_store["time"].values, valid)
    hours = (valid - valid.astype("datetime64[D]")) / np.timedelta64(1, "h")
    clock = era5_store[TIME_VAR].values[0]
    np.testing.assert_allclose(clock[:, 0], np.sin(2 * np.pi * hours / 24), atol=1e-6)
    np.testing.assert_allclose(clock[:, 1], np.cos(2 * np.pi * hours / 24), atol=1e-6)
    lat = np.asarray(era5_raw["lat"].values)
    assert np.all(np.diff(era5_store[STATIC_VAR].values[0][:, 0]) * np.sign(np.diff(lat)) > 0)


def test_window_inputs_carry_the_forcings_of_their_frames_and_targets_never(era5_store):
    windows = WindowDataset(era5_store, "test")
    assert windows.forcing_channels == ["hour_sin", "hour_cos", "lat", "lon"]
    assert windows.model_shape["forcing_channels"] == 4
    index = 5
    traj, t0 = (int(v) for v in windows.windows[index])
    x, y = windows[index]
    assert x.shape == (4, 1 + 4, 33, 49) and y.shape == (3, 1, 33, 49)
    fields = era5_store["fields"].values[traj]
    np.testing.assert_array_equal(x[:, :1].numpy(), fields[t0 : t0 + 4])
    np.testing.assert_array_equal(y.numpy(), fields[t0 + 4 : t0 + 7])
    clock = era5_store[TIME_VAR].values[traj, t0 : t0 + 4]
    np.testing.assert_array_equal(x[:, 1, 0, 0].numpy(), clock[:, 0])
    np.testing.assert_array_equal(x[:, 2, 7, 9].numpy(), clock[:, 1])
    static = era5_store[STATIC_VAR].values
    for frame in range(4):
        np.testing.assert_array_equal(x[frame, 3:].numpy(), static)
    # the input times' clock is what the window's timestamps say
    times, _ = windows.window_times(index)
    hours = (times - times.astype("datetime64[D]")) / np.timedelta64(1, "h")
    np.testing.assert_allclose(x[:, 1, 0, 0].numpy(), np.sin(2 * np.pi * hours / 24), atol=1e-6)
    # a store without forcings reads as before
    bare = era5_store.drop_vars([TIME_VAR, STATIC_VAR])
    bare.attrs = {k: v for k, v in bare.attrs.items() if k != "forcings"}
    plain = WindowDataset(bare, "test")
    assert "forcing_channels" not in plain.model_shape
    assert windows.input_shape == (4, 5, 33, 49) and plain.input_shape == (4, 1, 33, 49)


@pytest.mark.parametrize("name", ["unet", "resnet", "mlp_mixer", "simvp", "st_alternet", "fno"])
def test_every_model_takes_forcing_channels_and_predicts_only_the_fields(name):
    torch.manual_seed(0)
    model = build_model(
        name, in_frames=3, out_frames=2, channels=2, height=16, width=16, forcing_channels=3
    )
    y = model(torch.randn(2, 3, 5, 16, 16))
    assert y.shape == (2, 2, 2, 16, 16)
    with pytest.raises(DataError, match=r"C=5: 2 \+ 3 forcings"):
        model(torch.randn(2, 3, 2, 16, 16))


def test_persistence_repeats_the_fields_not_the_forcings():
    x = torch.randn(2, 4, 3, 5, 5)
    out = Persistence(2, channels=1)(x)
    assert out.shape == (2, 2, 1, 5, 5)
    torch.testing.assert_close(out[:, 1], x[:, -1, :1])


def test_a_rollout_with_forcings_feeds_each_step_the_forcings_of_its_frames():
    torch.manual_seed(0)
    model = build_model(
        "unet", in_frames=3, out_frames=2, channels=1, height=8, width=8, forcing_channels=2
    ).eval()
    fields = torch.randn(1, 3, 1, 8, 8)
    forcings = torch.randn(1, 3 + 5, 2, 8, 8)
    x = torch.cat([fields, forcings[:, :3]], dim=2)
    with torch.no_grad():
        out = rollout(model, x, 5, forcings=forcings)
        first = model(x)
        frames = torch.cat([fields, first], 1)
        second = model(torch.cat([frames[:, -3:], forcings[:, 2:5]], 2))
        frames = torch.cat([frames, second], 1)
        third = model(torch.cat([frames[:, -3:], forcings[:, 4:7]], 2))
    torch.testing.assert_close(out, torch.cat([first, second, third], 1)[:, :5])
    with pytest.raises(ConfigError, match="do not cover"):
        rollout(model, x, 5, forcings=forcings[:, :6])


def test_forcing_inputs_rebuild_the_stored_channels_from_coordinates(era5_raw, era5_store):
    info = store_forcings(era5_store.attrs)
    values, names = forcing_inputs(info["declared"], era5_raw, slice(10, 14), "input.nc")
    assert names == info["channels"]
    windows = WindowDataset(era5_store, "train")
    np.testing.assert_array_equal(values, windows.forcings(0, 10, 14))


@pytest.mark.bad_input
def test_an_unknown_or_repeated_forcing_names_the_parameter():
    with pytest.raises(ConfigError, match=r"weatherbench\.forcings: unknown forcing\(s\) 'tide'"):
        check_forcings(["hour_of_day", "tide"], "weatherbench.forcings")
    with pytest.raises(ConfigError, match=r"weatherbench\.forcings: a forcing is listed twice"):
        check_forcings(["latitude", "latitude"], "weatherbench.forcings")
    with pytest.raises(ConfigError, match=r"weatherbench\.forcings: expected a list"):
        check_forcings("hour_of_day", "weatherbench.forcings")


@pytest.mark.bad_input
def test_a_clock_forcing_on_simulation_time_names_the_parameter():
    raw = xr.Dataset(
        {
            "fields": (
                ("trajectory", "time", "channel", "y", "x"),
                np.random.rand(8, 12, 1, 8, 8).astype(np.float32),
            )
        },
        coords={
            "trajectory": np.arange(8),
            "time": np.arange(12.0),
            "channel": ["w"],
            "y": np.arange(8.0),
            "x": np.arange(8.0),
        },
        attrs={"dataset": "navier_stokes", "source": "test"},
    )
    with pytest.raises(ConfigError, match=r"navier_stokes\.forcings: hour_of_day need datetimes"):
        build_tensor_dataset(raw, split=SPLIT, window=WINDOW, forcings=("hour_of_day",))
    with pytest.raises(ConfigError, match=r"navier_stokes\.forcings: latitude need finite lat"):
        build_tensor_dataset(raw, split=SPLIT, window=WINDOW, forcings=("latitude",))


@pytest.mark.bad_input
def test_predict_input_without_the_coordinates_names_the_file(era5_raw):
    bare = era5_raw.drop_vars(["lat", "lon"])
    with pytest.raises(DataError, match=r"^in\.nc: forcings: latitude need finite lat"):
        forcing_inputs(["latitude"], bare, slice(0, 4), "in.nc")


@pytest.mark.parametrize("name", ["unet", "simvp", "st_alternet"])
def test_a_residual_model_forecasts_the_change_from_the_last_fields_frame(name):
    shape = dict(in_frames=3, out_frames=2, channels=2, height=16, width=16, forcing_channels=1)
    torch.manual_seed(0)
    plain = build_model(name, **shape).eval()
    residual = build_model(name, **shape, residual=True).eval()
    residual.load_state_dict(plain.state_dict())
    assert residual.config.residual and not plain.config.residual
    x = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(residual(x), plain(x) + x[:, -1:, :2])


def test_predict_rebuilds_the_forcings_of_a_model_trained_with_them(era5_raw, era5_store, tmp_path):
    from sdkd_pipeline import deploy

    windows = WindowDataset(era5_store, "train")
    torch.manual_seed(0)
    config = {"hidden": 8, "base_width": 8, "residual": True}
    model = build_model("unet", **windows.model_shape, **config).eval()
    ckpt = {
        "model": "unet",
        "method": "none",
        "dataset": "weatherbench",
        "role": "student",
        "model_config": config,
        "shape": windows.model_shape,
        "channels": windows.channels,
        "forcings": store_forcings(era5_store.attrs),
        "mean": windows.mean.clone(),
        "std": windows.std.clone(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    src = tmp_path / "raw.nc"
    era5_raw.isel(time=slice(0, 30)).to_netcdf(src)
    exported = deploy.export_torchscript(ckpt, tmp_path / "export")
    out = deploy.predict(exported, src, tmp_path / "forecast.nc", trust_torchscript=True)
    got = xr.open_dataset(out)["forecast"].values
    # by hand: the last 4 frames normalized, the stored forcings of those frames appended
    fields = (era5_raw["fields"].values[0, 26:30] - windows.mean.numpy()[:, None, None]) / (
        windows.std.numpy()[:, None, None]
    )
    x = np.concatenate([fields, windows.forcings(0, 26, 30)], axis=1)[None]
    with torch.no_grad():
        y = model(torch.from_numpy(x.astype(np.float32)))[0].numpy()
    expected = y * windows.std.numpy()[:, None, None] + windows.mean.numpy()[:, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
