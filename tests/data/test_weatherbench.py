"""WeatherBench / ERA5 readers on files written here in the real layouts, and the real GRIB
sample (ERA5 2 m temperature over the UK, March 2019; contains modified Copernicus Climate
Change Service information 2019)."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sdkd_pipeline.data.raw import validate_raw
from sdkd_pipeline.data.sources.weatherbench import (
    WeatherBenchConfig,
    download_weatherbench1,
    read_era5,
    read_weatherbench,
    read_weatherbench1,
    read_weatherbench2_zarr,
    wb1_archive_url,
)
from sdkd_pipeline.errors import ConfigError, DataError, DownloadError, MissingRawDataError

GRIB_SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "era5-2mt-2019-03-uk.grib"
LAT = np.linspace(-78.75, 78.75, 8)  # ascending, like WB1
LON = np.arange(0.0, 360.0, 30.0)  # 12 points
LEVELS = np.array([50, 250, 500, 850, 1000])


def _field(times: pd.DatetimeIndex, offset: float) -> np.ndarray:
    """A smooth, time-varying (time, lat, lon) field, distinct per variable via ``offset``."""
    hours = ((times - pd.Timestamp("2000-01-01")) / pd.Timedelta(hours=1)).to_numpy()
    lat, lon = np.meshgrid(np.deg2rad(LAT), np.deg2rad(LON), indexing="ij")
    return (
        offset
        + 20 * np.cos(lat)[None]
        + 5 * np.sin(lon + 0.1 * hours[:, None, None])
        + 0.01 * hours[:, None, None]
    ).astype(np.float32)


def _z(times: pd.DatetimeIndex) -> np.ndarray:
    """Geopotential (time, level, lat, lon): level-dependent offsets."""
    return np.stack([_field(times, 1000.0 * lev) for lev in LEVELS], axis=1)


def _write_wb1_year(root: Path, year: int, times: pd.DatetimeIndex) -> None:
    t2m = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), _field(times, 273.0))},
        coords={"time": times, "lat": LAT, "lon": LON},
    )
    z = xr.Dataset(
        {"z": (("time", "level", "lat", "lon"), _z(times))},
        coords={"time": times, "level": LEVELS, "lat": LAT, "lon": LON},
    )
    for name, ds in (("2m_temperature", t2m), ("geopotential", z)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(folder / f"{name}_{year}_5.625deg.nc", engine="netcdf4")


def _hours(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="1h")


@pytest.fixture
def wb1_root(tmp_path: Path) -> Path:
    root = tmp_path / "weatherbench"
    _write_wb1_year(root, 2016, _hours("2016-12-31T00:00", 24))
    _write_wb1_year(root, 2017, _hours("2017-01-01T00:00", 24))
    return root


@pytest.fixture(scope="module")
def grib_raw() -> xr.Dataset:
    return read_era5(GRIB_SAMPLE)


# ----------------------------------------------------------------------------- WB1


def test_wb1_reads_variables_levels_and_years(wb1_root: Path) -> None:
    raw = read_weatherbench1(
        wb1_root,
        ["2m_temperature", "geopotential"],
        [2016, 2017],
        levels=[500, 850],
        progress=False,
    )
    validate_raw(raw)
    assert list(raw["channel"].values) == ["t2m", "z500", "z850"]
    assert raw["fields"].shape == (1, 48, 3, LAT.size, LON.size)
    times = _hours("2016-12-31T00:00", 48)
    np.testing.assert_array_equal(raw["time"].values, times.to_numpy())
    np.testing.assert_allclose(raw["fields"].values[0, :, 0], _field(times, 273.0))
    z = _z(times)
    np.testing.assert_allclose(raw["fields"].values[0, :, 1], z[:, 2])  # 500 hPa
    np.testing.assert_allclose(raw["fields"].values[0, :, 2], z[:, 3])  # 850 hPa
    np.testing.assert_array_equal(raw["lat"].values, LAT)
    assert raw["lat"].dims == ("y",) and raw["lon"].dims == ("x",)
    assert np.all(raw["segment"].values == 0)  # the two years join without a gap
    assert raw.attrs["dataset"] == "weatherbench"
    assert raw.attrs["files"].count(".nc") == 4
    assert raw.attrs["time_step_seconds"] == 3600.0


def test_wb1_short_names_and_all_levels(wb1_root: Path) -> None:
    raw = read_weatherbench1(wb1_root, ["t2m", "z"], [2017], progress=False)
    assert list(raw["channel"].values) == ["t2m", "z50", "z250", "z500", "z850", "z1000"]


def test_wb1_gap_between_years_starts_a_new_segment(tmp_path: Path) -> None:
    root = tmp_path / "wb"
    _write_wb1_year(root, 2016, _hours("2016-06-01", 10))
    _write_wb1_year(root, 2017, _hours("2017-06-01", 10))
    raw = read_weatherbench1(root, ["2m_temperature"], [2016, 2017], progress=False)
    np.testing.assert_array_equal(raw["segment"].values, [0] * 10 + [1] * 10)
    assert raw.attrs["n_segments"] == 2


def test_wb1_missing_hour_inside_a_file_starts_a_new_segment(tmp_path: Path) -> None:
    root = tmp_path / "wb"
    times = _hours("2017-01-01", 12).delete(5)
    _write_wb1_year(root, 2017, times)
    raw = read_weatherbench1(root, ["2m_temperature"], [2017], progress=False)
    np.testing.assert_array_equal(raw["segment"].values, [0] * 5 + [1] * 6)
    assert raw.attrs["time_step_seconds"] == 3600.0


def test_wb1_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(MissingRawDataError) as err:
        read_weatherbench1(tmp_path / "nothing", ["2m_temperature"], [2017], progress=False)
    msg = str(err.value)
    assert "data/01_raw/weatherbench" in msg
    assert "python -m sdkd_pipeline.data.sources.weatherbench 2m_temperature" in msg
    assert "2m_temperature_2017_5.625deg.nc" in msg


def test_wb1_unknown_variable_lists_what_the_file_holds(wb1_root: Path) -> None:
    # The directory exists but the file holds t2m, not u10.
    folder = wb1_root / "10m_u_component_of_wind"
    folder.mkdir()
    shutil.copy(
        wb1_root / "2m_temperature" / "2m_temperature_2017_5.625deg.nc",
        folder / "10m_u_component_of_wind_2017_5.625deg.nc",
    )
    with pytest.raises(DataError, match=r"10m_u_component_of_wind_2017_5\.625deg\.nc.*'t2m'"):
        read_weatherbench1(wb1_root, ["10m_u_component_of_wind"], [2017], progress=False)


def test_wb1_level_not_in_file_lists_levels(wb1_root: Path) -> None:
    with pytest.raises(DataError, match=r"geopotential_2017_5\.625deg\.nc.*\[700\].*\[50, 250"):
        read_weatherbench1(wb1_root, ["geopotential"], [2017], levels=[700], progress=False)


def test_wb1_wrong_dims_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "2m_temperature"
    folder.mkdir()
    times = _hours("2017-01-01", 4)
    ds = xr.Dataset(
        {"t2m": (("time", "member", "lat", "lon"), _field(times, 0)[:, None].repeat(2, 1))},
        coords={"time": times, "lat": LAT, "lon": LON},
    )
    ds.to_netcdf(folder / "2m_temperature_2017_5.625deg.nc")
    with pytest.raises(DataError, match=r"2m_temperature_2017_5\.625deg\.nc.*dims"):
        read_weatherbench1(tmp_path, ["2m_temperature"], [2017], progress=False)


def test_wb1_nan_names_the_file(tmp_path: Path) -> None:
    times = _hours("2017-01-01", 6)
    _write_wb1_year(tmp_path, 2017, times)
    path = tmp_path / "2m_temperature" / "2m_temperature_2017_5.625deg.nc"
    values = _field(times, 273.0)
    values[3, 2, 2] = np.nan
    xr.Dataset(
        {"t2m": (("time", "lat", "lon"), values)}, coords={"time": times, "lat": LAT, "lon": LON}
    ).to_netcdf(path)
    with pytest.raises(DataError, match=r"2m_temperature_2017_5\.625deg\.nc: 1 NaN/Inf.*03:00"):
        read_weatherbench1(tmp_path, ["2m_temperature"], [2017], progress=False)


def test_wb1_truncated_file_names_the_file(wb1_root: Path) -> None:
    path = wb1_root / "2m_temperature" / "2m_temperature_2017_5.625deg.nc"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"2m_temperature_2017_5\.625deg\.nc.*truncated or corrupt"):
        read_weatherbench1(wb1_root, ["2m_temperature"], [2016, 2017], progress=False)


def test_wb1_overlapping_years_are_duplicates(tmp_path: Path) -> None:
    _write_wb1_year(tmp_path, 2016, _hours("2016-12-31T20:00", 6))
    _write_wb1_year(tmp_path, 2017, _hours("2016-12-31T22:00", 6))  # two hours overlap
    with pytest.raises(DataError, match="appears more than once"):
        read_weatherbench1(tmp_path, ["2m_temperature"], [2016, 2017], progress=False)


# ----------------------------------------------------------------------------- WB2 / ERA5


def _six_hourly(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2017-01-01", periods=n, freq="6h")


def _write_wb2_zarr(path: Path, times: pd.DatetimeIndex) -> None:
    """WB2 layout: long names, dims (time, [level,] longitude, latitude)."""
    t2m = _field(times, 273.0).transpose(0, 2, 1)
    z = _z(times).transpose(0, 1, 3, 2)
    ds = xr.Dataset(
        {
            "2m_temperature": (("time", "longitude", "latitude"), t2m),
            "geopotential": (("time", "level", "longitude", "latitude"), z),
        },
        coords={"time": times, "level": LEVELS, "longitude": LON, "latitude": LAT},
    )
    ds.to_zarr(path, mode="w", zarr_format=2)  # the public WB2 stores are Zarr v2


def _write_era5_netcdf_new_style(path: Path, times: pd.DatetimeIndex) -> None:
    """Current CDS NetCDF: short names, valid_time, pressure_level, latitude descending."""
    ds = xr.Dataset(
        {
            "t2m": (("valid_time", "latitude", "longitude"), _field(times, 273.0)[:, ::-1]),
            "z": (("valid_time", "pressure_level", "latitude", "longitude"), _z(times)[:, :, ::-1]),
        },
        coords={
            "valid_time": times,
            "pressure_level": LEVELS.astype(float),
            "latitude": LAT[::-1],
            "longitude": LON,
        },
    )
    ds.to_netcdf(path, engine="netcdf4")


def test_three_layouts_give_the_same_channels_and_grid(tmp_path: Path) -> None:
    times = _six_hourly(8)
    wb1 = tmp_path / "wb1"
    _write_wb1_year(wb1, 2017, times)
    _write_wb2_zarr(tmp_path / "wb2.zarr", times)
    _write_era5_netcdf_new_style(tmp_path / "era5.nc", times)
    variables, levels = ["2m_temperature", "geopotential"], [500, 850]
    a = read_weatherbench1(wb1, variables, [2017], levels, progress=False)
    b = read_weatherbench2_zarr(tmp_path / "wb2.zarr", variables, levels)
    c = read_era5(tmp_path / "era5.nc", ["t2m", "z"], levels)
    for raw in (a, b, c):
        validate_raw(raw)
        assert list(raw["channel"].values) == ["t2m", "z500", "z850"]
        np.testing.assert_array_equal(raw["lat"].values, LAT)
        np.testing.assert_array_equal(raw["lon"].values, LON)
        np.testing.assert_array_equal(raw["fields"].values, a["fields"].values)
        np.testing.assert_array_equal(raw["time"].values, times.to_numpy())
        assert raw.attrs["time_step_seconds"] == 6 * 3600.0


def test_wb2_time_slice_and_errors(tmp_path: Path) -> None:
    times = _six_hourly(12)
    store = tmp_path / "wb2.zarr"
    _write_wb2_zarr(store, times)
    raw = read_weatherbench2_zarr(store, ["t2m"], time_slice=("2017-01-01T12", "2017-01-02T06"))
    np.testing.assert_array_equal(raw["time"].values, times[2:6].to_numpy())
    with pytest.raises(DataError, match=r"wb2\.zarr.*'vorticity'.*holds.*2m_temperature"):
        read_weatherbench2_zarr(store, ["vorticity"])
    with pytest.raises(DataError, match=r"wb2\.zarr.*\[925\].*\[50, 250, 500, 850, 1000\]"):
        read_weatherbench2_zarr(store, ["geopotential"], [925])
    with pytest.raises(MissingRawDataError, match="weatherbench2"):
        read_weatherbench2_zarr(tmp_path / "absent.zarr", ["t2m"])


def test_era5_netcdf_nan_is_an_error(tmp_path: Path) -> None:
    times = _hours("2019-03-01", 4)
    values = _field(times, 280.0)
    values[2, 0, 0] = np.inf
    path = tmp_path / "era5.nc"
    xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), values)},
        coords={"time": times, "latitude": LAT, "longitude": LON},
    ).to_netcdf(path)
    with pytest.raises(DataError, match=r"era5\.nc: 1 NaN/Inf"):
        read_era5(path)


def test_era5_missing_time_dim_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "clim.nc"
    xr.Dataset(
        {"t2m": (("latitude", "longitude"), _field(_hours("2019-01-01", 1), 0)[0])},
        coords={"latitude": LAT, "longitude": LON},
    ).to_netcdf(path)
    with pytest.raises(DataError, match=r"clim\.nc: no 'time' dimension"):
        read_era5(path)


def test_real_grib_sample(grib_raw: xr.Dataset) -> None:
    raw = grib_raw
    assert list(raw["channel"].values) == ["t2m"]
    assert raw["fields"].shape == (1, 744, 1, 33, 49)
    assert raw["time"].values[0] == np.datetime64("2019-03-01T00:00")
    assert raw["time"].values[-1] == np.datetime64("2019-03-31T23:00")
    assert np.all(raw["segment"].values == 0)
    lat = raw["lat"].values
    assert lat[0] == 50.0 and lat[-1] == 58.0 and np.all(np.diff(lat) > 0)
    assert raw["lon"].values[0] == -10.0 and raw["lon"].values[-1] == 2.0
    # Kelvin, plausible for the UK in March; the file stores latitude descending, so the
    # southern row (50 N) must now be row 0: compare against cfgrib directly.
    direct = xr.open_dataset(GRIB_SAMPLE, engine="cfgrib", backend_kwargs={"indexpath": ""})
    try:
        np.testing.assert_array_equal(
            raw["fields"].values[0, :, 0], direct["t2m"].values[:, ::-1, :]
        )
    finally:
        direct.close()
    values = raw["fields"].values
    assert 250.0 < values.min() and values.max() < 300.0
    assert "Copernicus" in raw.attrs["attribution"]


@pytest.mark.bad_input
def test_grib_writes_no_index_and_truncation_is_an_error(tmp_path: Path) -> None:
    copy = tmp_path / "era5.grib"
    data = GRIB_SAMPLE.read_bytes()
    copy.write_bytes(data[: len(data) // 2 + 123])  # cut inside a message
    with pytest.raises(DataError, match=r"era5\.grib.*truncated or corrupt"):
        read_era5(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["era5.grib"]  # no .idx left
    with pytest.raises(
        DataError, match=r"era5-2mt-2019-03-uk\.grib.*'geopotential'.*holds \['t2m'\]"
    ):
        read_era5(GRIB_SAMPLE, ["geopotential"])
    assert not list(GRIB_SAMPLE.parent.glob("*.idx"))


def test_a_grib_cut_at_a_message_boundary_is_reported(tmp_path: Path, caplog) -> None:
    data = GRIB_SAMPLE.read_bytes()
    starts = [m.start() for m in re.finditer(b"GRIB", data)]
    assert len(starts) == 744  # one message per hour of March 2019
    cut = tmp_path / "era5.grib"
    cut.write_bytes(data[: starts[372]])  # every message left is whole: cfgrib reads it
    with caplog.at_level("WARNING", logger="sdkd_pipeline"):
        raw = read_era5(cut)
    assert raw.sizes["time"] == 372
    assert "era5.grib: 372 of the 744" in caplog.text and "cut short" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sdkd_pipeline"):
        read_era5(cut, time_slice=("2019-03-01", "2019-03-31T23:00"))
    assert "before the requested time_slice end 2019-03-31T23:00" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="sdkd_pipeline"):
        assert read_era5(GRIB_SAMPLE).sizes["time"] == 744  # the whole month: no warning
        read_era5(cut, time_slice=("2019-03-02", "2019-03-10"))  # inside what is there
    assert "cut short" not in caplog.text and "time_slice" not in caplog.text


# ----------------------------------------------------------------------------- entry point


def test_entry_point_dispatches_and_validates(wb1_root: Path, tmp_path: Path) -> None:
    raw = read_weatherbench(
        {
            "format": "wb1_netcdf",
            "root": str(wb1_root),
            "variables": ["2m_temperature"],
            "years": {"start": 2016, "end": 2017},
            "progress": False,
        }
    )
    assert raw.sizes["time"] == 48
    with pytest.raises(ConfigError, match="weatherbench.format"):
        read_weatherbench({"format": "grib2"})
    with pytest.raises(ConfigError, match="weatherbench.format"):
        read_weatherbench({"root": "x"})
    with pytest.raises(ConfigError, match="weatherbench.variabels"):
        read_weatherbench({"format": "era5", "path": "x", "variabels": ["t2m"]})
    with pytest.raises(ConfigError, match="weatherbench.path"):
        read_weatherbench({"format": "era5"})
    with pytest.raises(ConfigError, match="weatherbench.years"):
        read_weatherbench({"format": "wb1_netcdf", "variables": ["t2m"]})
    with pytest.raises(MissingRawDataError, match="Copernicus"):
        read_weatherbench({"format": "era5", "path": str(tmp_path / "none.grib")})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, r"format: required parameter missing \(one of 'wb1_netcdf', 'wb2_zarr', 'era5'\)$"),
        ({"format": "grib2"}, r"format must be one of 'wb1_netcdf', 'wb2_zarr', 'era5', got"),
        ({"format": "era5", "path": "x", "variables": []}, r"variables: an empty list"),
        ({"format": "era5", "path": "x", "levels": ["850"]}, r"levels\[0\] must be an integer"),
        ({"format": "era5", "path": "x", "time_slice": ["2017"]}, r"time_slice: expected \["),
        (
            {"format": "wb1_netcdf", "variables": "t2m", "years": {"start": 2018, "end": 2016}},
            r"years must be a list or null, got \{'start': 2018, 'end': 2016\} \(a list of years",
        ),
        ({"format": "wb1_netcdf", "years": [2017]}, r"variables: required for format wb1_netcdf$"),
    ],
)
def test_config_errors_name_the_full_parameter_path(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^weatherbench\.source\.x\." + message):
        WeatherBenchConfig.from_params(params, "weatherbench.source.x")


def test_config_spellings_one_value_a_year_range_and_yaml_numbers() -> None:
    conf = WeatherBenchConfig.from_params(
        {
            "format": "wb1_netcdf",
            "variables": "t2m",
            "levels": 500.0,
            "years": {"start": 2016, "end": 2018},
        }
    )
    assert (conf.variables, conf.levels, conf.years) == (["t2m"], [500], [2016, 2017, 2018])
    assert WeatherBenchConfig.from_params(
        {"format": "wb1_netcdf", "variables": ["t2m"], "years": 2017}
    ).years == [2017]


def test_entry_point_era5_netcdf_with_time_slice(tmp_path: Path) -> None:
    times = _six_hourly(8)
    _write_era5_netcdf_new_style(tmp_path / "era5.nc", times)
    cfg = {
        "format": "era5",
        "path": str(tmp_path / "era5.nc"),
        "variables": ["2m_temperature", "geopotential"],
        "levels": [850],
        "time_slice": ["2017-01-01T06", "2017-01-01T18"],
    }
    raw = read_weatherbench(cfg)
    assert list(raw["channel"].values) == ["t2m", "z850"]
    np.testing.assert_array_equal(raw["time"].values, times[1:4].to_numpy())
    np.testing.assert_allclose(raw["fields"].values[0, :, 1], _z(times)[1:4, 3])
    with pytest.raises(DataError, match="no time step selected"):
        read_weatherbench({**cfg, "time_slice": ["2018-01-01", "2018-02-01"]})


# ----------------------------------------------------------------------------- download


def test_archive_url_follows_the_tum_pattern() -> None:
    assert wb1_archive_url("2m_temperature") == (
        "https://dataserv.ub.tum.de/s/m1524895/download?path=%2F5.625deg%2F2m_temperature"
        "&files=2m_temperature_5.625deg.zip"
    )


def test_a_rejected_archive_is_deleted_and_a_fixed_url_then_works(tmp_path: Path) -> None:
    from tests.http_server import serve_directory

    source = tmp_path / "src"
    _write_wb1_year(source, 2016, _hours("2016-12-31T00:00", 24))
    www = tmp_path / "www"
    www.mkdir()
    (www / "wrong").write_text("<!doctype html><html><body>Log in</body></html>")
    with zipfile.ZipFile(www / "download", "w") as zf:
        for path in sorted((source / "2m_temperature").glob("*.nc")):
            zf.write(path, arcname=path.name)
    dest = tmp_path / "raw"
    with serve_directory(www) as server:
        # a base URL that serves a web page: refused, and the page is not kept as the archive
        with pytest.raises(DownloadError, match=r"neither a zip nor a tar.*web page.*was deleted"):
            download_weatherbench1(
                "2m_temperature", dest, base_url=f"{server.base_url}/wrong", progress=False
            )
        assert not list(dest.iterdir())
        # a page left over from an older version (not deleted then) is not reused either
        (dest / "2m_temperature_5.625deg.zip").write_text("<html></html>")
        files = download_weatherbench1(
            "2m_temperature", dest, base_url=f"{server.base_url}/download", progress=False
        )
    assert [p.name for p in files] == ["2m_temperature_2016_5.625deg.nc"]
    assert sorted(p.name for p in dest.iterdir()) == ["2m_temperature"]


def test_download_against_local_server(tmp_path: Path) -> None:
    from tests.http_server import serve_directory

    # The real archive holds the yearly files at its top level.
    source = tmp_path / "src"
    _write_wb1_year(source, 2016, _hours("2016-12-31T00:00", 24))
    _write_wb1_year(source, 2017, _hours("2017-01-01T00:00", 24))
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "download", "w") as zf:
        for path in sorted((source / "2m_temperature").glob("*.nc")):
            zf.write(path, arcname=path.name)
    dest = tmp_path / "raw"
    with serve_directory(www) as server:
        files = download_weatherbench1(
            "2m_temperature", dest, base_url=f"{server.base_url}/download", progress=False
        )
        assert [r.path for r in server.requests] == ["/download"]
    assert [p.name for p in files] == [
        "2m_temperature_2016_5.625deg.nc",
        "2m_temperature_2017_5.625deg.nc",
    ]
    assert sorted(p.name for p in dest.iterdir()) == ["2m_temperature"]  # no zip, no staging
    raw = read_weatherbench1(dest, ["2m_temperature"], [2016, 2017], progress=False)
    expected = read_weatherbench1(source, ["2m_temperature"], [2016, 2017], progress=False)
    np.testing.assert_array_equal(raw["fields"].values, expected["fields"].values)
    with pytest.raises(ConfigError, match="weatherbench.download.variable"):
        download_weatherbench1("2m_temp", dest, progress=False)
