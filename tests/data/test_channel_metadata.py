"""CF metadata of the channels (``data/cf.py``): every source writes ``channel_long_name`` and
``channel_units``, they survive the tensor store's write and reopen, and a store without them
reads with the fallback. Also the RBC sources' one channel order and ``grid_y``, and the
``fno_mat.viscosity`` parameter."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import xarray as xr

from sdkd_pipeline.data.cf import (
    LONG_NAME,
    UNITS,
    axis_label,
    cf_units,
    channel_metadata,
    with_channel_metadata,
)
from sdkd_pipeline.data.raw import make_raw, validate_raw
from sdkd_pipeline.data.sources import load_raw
from sdkd_pipeline.data.store import open_store, write_store
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.errors import ConfigError, DataError
from tests.data.test_navier_stokes import _fno_arrays
from tests.data.test_rayleigh_benard import write_well_file
from tests.data.test_taxibj import _plus_sequences, _slots, _write_bj, _write_plus
from tests.data.test_weatherbench import (
    GRIB_SAMPLE,
    _hours,
    _six_hourly,
    _write_wb1_year,
    _write_wb2_zarr,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NONDIM = "1"
NS_META = {"vorticity": {"long_name": "vorticity (nondimensional)", "units": NONDIM}}
RBC_META = {
    "buoyancy": {"long_name": "buoyancy (nondimensional)", "units": NONDIM},
    "velocity_x": {"long_name": "horizontal velocity (nondimensional)", "units": NONDIM},
    "velocity_y": {"long_name": "vertical velocity (nondimensional)", "units": NONDIM},
    "pressure": {"long_name": "pressure (nondimensional)", "units": NONDIM},
}

RBC_SMALL = dict(
    nx=16,
    nz=8,
    rayleigh=5e3,
    t_spinup=0.0,
    t_final=2.0,
    record_interval=0.5,
    n_trajectories=3,
    device="cpu",
)
NS_SMALL = dict(
    n_trajectories=3,
    resolution=32,
    record_resolution=32,
    viscosity=1e-3,
    dt=None,
    t_final=4.0,
    record_every=1.0,
    device="cpu",
)


def _store_metadata(raw: xr.Dataset, tmp_path: Path, window: int = 1) -> dict:
    """Build the tensor store of ``raw``, write it, reopen it and read its channel metadata."""
    tensors = build_tensor_dataset(
        raw,
        split=SplitConfig(train=1, val=1, test=1)  # trajectories
        if raw.sizes["trajectory"] > 1
        else SplitConfig(train=0.6, val=0.2, test=0.2),
        window=WindowConfig(t_in=window, t_out=window),
    )
    path = write_store(tensors, tmp_path / "store.zarr")
    store = open_store(path)
    if LONG_NAME in store.coords:  # coordinates along channel, not attributes
        assert store[LONG_NAME].dims == store[UNITS].dims == ("channel",)
    return channel_metadata(store)


# ---- every source writes them, and the store keeps them ----------------------------------------


def test_navier_stokes_generator_store(tmp_path):
    raw = load_raw("navier_stokes", {"kind": "generate", "generate": NS_SMALL}, progress=False)
    assert _store_metadata(raw, tmp_path) == NS_META


def test_navier_stokes_fno_mat_store(tmp_path):
    path = tmp_path / "NavierStokes_V1e-5_N3_T5.mat"
    scipy.io.savemat(path, _fno_arrays())
    raw = load_raw("navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": str(path)}})
    assert _store_metadata(raw, tmp_path) == NS_META


def test_rayleigh_benard_generator_store(tmp_path):
    source = {"kind": "generate_free_slip", "generate_free_slip": RBC_SMALL}
    raw = load_raw("rayleigh_benard", source, progress=False)
    assert _store_metadata(raw, tmp_path) == RBC_META


def test_rayleigh_benard_the_well_store(tmp_path):
    write_well_file(tmp_path / "a.hdf5", n_traj=5)
    source = {"kind": "the_well", "the_well": {"paths": [str(tmp_path / "a.hdf5")]}}
    raw = load_raw("rayleigh_benard", source)
    assert _store_metadata(raw, tmp_path) == RBC_META


def test_weatherbench_grib_store_takes_the_files_units(tmp_path):
    """The real ERA5 sample: cfgrib's attributes say Kelvin and "2 metre temperature"."""
    source = {"kind": "era5", "era5": {"path": str(GRIB_SAMPLE)}}
    raw = load_raw("weatherbench", source)
    expected = {"t2m": {"long_name": "2 metre temperature", "units": "K"}}
    assert _store_metadata(raw, tmp_path, window=12) == expected


def test_weatherbench_netcdf_attributes_are_used_in_cf_spelling(tmp_path):
    """A NetCDF's own long_name / units win (ECMWF's ``**`` exponents in CF spelling); a
    variable without them gets ECMWF's values; a pressure level joins the long name."""
    times = _hours("2019-01-01", 60)
    _write_wb1_year(tmp_path / "wb1", 2019, times)
    z = xr.open_dataset(tmp_path / "wb1/geopotential/geopotential_2019_5.625deg.nc").load()
    z["z"].attrs.update({"units": "m**2 s**-2", "long_name": "Geopotential height thing"})
    z.to_netcdf(tmp_path / "era5.nc")  # t2m has no attributes in the test file
    t2m = xr.open_dataset(tmp_path / "wb1/2m_temperature/2m_temperature_2019_5.625deg.nc")
    xr.merge([z, t2m.load()]).to_netcdf(tmp_path / "both.nc")
    source = {"kind": "era5", "era5": {"path": str(tmp_path / "both.nc"), "levels": [500]}}
    raw = load_raw("weatherbench", source)
    assert channel_metadata(raw) == {
        "z500": {"long_name": "Geopotential height thing at 500 hPa", "units": "m2 s-2"},
        "t2m": {"long_name": "2 metre temperature", "units": "K"},
    }
    wb1 = load_raw(
        "weatherbench",
        {
            "kind": "wb1_netcdf",
            "wb1_netcdf": {
                "root": str(tmp_path / "wb1"),
                "variables": ["geopotential"],
                "years": [2019],
                "levels": [850],
                "progress": False,
            },
        },
    )
    expected = {"z850": {"long_name": "Geopotential at 850 hPa", "units": "m2 s-2"}}
    assert _store_metadata(wb1, tmp_path, window=2) == expected
    _write_wb2_zarr(tmp_path / "wb2.zarr", _six_hourly(40))
    wb2 = load_raw(
        "weatherbench",
        {
            "kind": "wb2_zarr",
            "wb2_zarr": {"path": str(tmp_path / "wb2.zarr"), "variables": ["t2m"]},
        },
    )
    assert channel_metadata(wb2) == {"t2m": {"long_name": "2 metre temperature", "units": "K"}}


def test_taxibj_and_taxibj_plus_stores(tmp_path):
    (tmp_path / "bj").mkdir()
    _write_bj(tmp_path / "bj" / "BJ13_M32x32_T30_InOut.h5", _slots("20130701", 1, 48))
    raw = load_raw("taxibj", {"kind": "deepst_h5", "deepst_h5": {"dir": str(tmp_path / "bj")}})
    meta = _store_metadata(raw, tmp_path, window=2)
    assert {c: m["units"] for c, m in meta.items()} == {"inflow": "1", "outflow": "1"}
    assert "entering" in meta["inflow"]["long_name"] and "30-minute" in meta["inflow"]["long_name"]
    assert "leaving" in meta["outflow"]["long_name"]
    (tmp_path / "plus").mkdir()
    _write_plus(tmp_path / "plus", _plus_sequences(5, frames=2, size=4))
    plus = load_raw("taxibj_plus", {"kind": "arrays", "arrays": {"dir": str(tmp_path / "plus")}})
    plus_meta = channel_metadata(plus)
    assert list(plus_meta) == ["inflow", "outflow"]
    assert all(m["units"] == "1" and "count" in m["long_name"] for m in plus_meta.values())


def test_the_raw_store_keeps_them_through_the_pipelines_chunking(tmp_path):
    """The data pipeline writes the raw dataset (chunked along time) before the tensor store."""
    from sdkd_pipeline.pipelines.data.nodes import acquire_raw, build_tensors

    source = {"kind": "era5", "era5": {"path": str(GRIB_SAMPLE)}}
    raw = acquire_raw("weatherbench", source, progress=False)
    reopened = open_store(write_store(raw, tmp_path / "raw.zarr", kind="raw"), kind="raw")
    assert channel_metadata(reopened) == channel_metadata(raw)
    tensors = build_tensors(
        reopened, {"t_in": 12, "t_out": 12}, {"train": 0.7, "val": 0.15, "test": 0.15}, {}
    )
    store = open_store(write_store(tensors, tmp_path / "tensors.zarr"))
    assert channel_metadata(store)["t2m"] == {"long_name": "2 metre temperature", "units": "K"}


def test_a_store_without_the_coordinates_reads_with_the_fallback(tmp_path):
    """Stores written before the metadata existed: channel names, units "unknown"."""
    rng = np.random.default_rng(0)
    raw = make_raw(
        rng.normal(size=(5, 4, 2, 3, 3)), dataset="old", source="t", channels=["a", "b"],
        time=np.arange(4.0),
    )  # fmt: skip
    assert LONG_NAME not in raw.coords
    meta = _store_metadata(raw, tmp_path)
    assert meta == {
        "a": {"long_name": "a", "units": "unknown"},
        "b": {"long_name": "b", "units": "unknown"},
    }
    assert axis_label(meta["a"], "MSE", 2) == "MSE of a [units unknown]"


@pytest.mark.bad_input
def test_half_of_the_metadata_is_a_data_error_naming_the_origin():
    raw = make_raw(
        np.ones((1, 2, 1, 2, 2)), dataset="x", source="file.nc", channels=["c"],
        time=np.arange(2.0), long_names=["c field"], units=["K"],
    )  # fmt: skip
    with pytest.raises(DataError, match=r"file\.nc: coordinates channel_long_name and "):
        validate_raw(raw.drop_vars(UNITS))


# ---- the cf helpers ------------------------------------------------------------------------------


def test_cf_units_spelling_and_axis_labels():
    assert cf_units("m s**-1") == "m s-1"
    assert cf_units("m^2 s^-2") == "m2 s-2"
    assert cf_units("(0 - 1)") == "1"
    assert cf_units("  ") == "unknown" and cf_units(None) == "unknown"
    assert cf_units("K") == "K"
    meta = {"long_name": "relative vorticity", "units": "s-1"}
    assert axis_label(meta, "MSE", 2) == "MSE of relative vorticity [(s-1)²]"
    assert axis_label({"long_name": "T", "units": "K"}, "MSE", 2) == "MSE of T [K²]"
    assert axis_label({"long_name": "u", "units": "m s-1"}) == "u [m s-1]"
    assert (
        axis_label(NS_META["vorticity"], "RMSE")
        == "RMSE of vorticity (nondimensional) [dimensionless]"
    )
    ds = xr.Dataset(coords={"channel": ["a", "b"]})
    with pytest.raises(ValueError, match="no entry for channel"):
        with_channel_metadata(ds, {"a": "A"}, ["1", "1"])


# ---- Rayleigh-Benard: one channel order, grid_y ------------------------------------------------


def test_both_rbc_sources_give_the_same_channel_list(tmp_path):
    write_well_file(tmp_path / "a.hdf5", n_traj=1)
    the_well = load_raw(
        "rayleigh_benard", {"kind": "the_well", "the_well": {"paths": [str(tmp_path)]}}
    )
    generated = load_raw(
        "rayleigh_benard",
        {"kind": "generate_free_slip", "generate_free_slip": RBC_SMALL},
        progress=False,
    )
    expected = ["buoyancy", "velocity_x", "velocity_y", "pressure"]
    assert list(the_well["channel"].values) == list(generated["channel"].values) == expected
    assert channel_metadata(the_well) == channel_metadata(generated)
    # without pressure, and whatever order `fields` lists them in
    no_p = {**RBC_SMALL, "include_pressure": False}
    generated = load_raw(
        "rayleigh_benard",
        {"kind": "generate_free_slip", "generate_free_slip": no_p},
        progress=False,
    )
    the_well = load_raw(
        "rayleigh_benard",
        {
            "kind": "the_well",
            "the_well": {
                "paths": [str(tmp_path)],
                "fields": ["velocity_y", "velocity_x", "buoyancy"],
            },
        },
    )
    assert list(the_well["channel"].values) == list(generated["channel"].values) == expected[:3]


def test_grid_y_says_what_the_source_has(tmp_path):
    write_well_file(tmp_path / "cheb.hdf5")  # Chebyshev-like y
    cheb = load_raw(
        "rayleigh_benard",
        {"kind": "the_well", "the_well": {"paths": [str(tmp_path / "cheb.hdf5")]}},
    )
    assert cheb.attrs["grid_y"].startswith("non-uniform, spacing ")
    write_well_file(tmp_path / "even.hdf5")
    with h5py.File(tmp_path / "even.hdf5", "r+") as f:
        f["dimensions/y"][...] = ((np.arange(8) + 0.5) / 8).astype(np.float32)
    even = load_raw(
        "rayleigh_benard",
        {"kind": "the_well", "the_well": {"paths": [str(tmp_path / "even.hdf5")]}},
    )
    assert even.attrs["grid_y"].startswith("uniform, spacing 0.125, 8 points from 0.0625 to 0.9375")
    generated = load_raw(
        "rayleigh_benard",
        {"kind": "generate_free_slip", "generate_free_slip": RBC_SMALL},
        progress=False,
    )
    assert generated.attrs["grid_y"].startswith("uniform, spacing 0.125, 8 points")
    assert "grid_z" not in generated.attrs


# ---- fno_mat.viscosity ------------------------------------------------------------------------


def _fno_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    scipy.io.savemat(path, _fno_arrays())
    return str(path)


def test_fno_mat_viscosity_parameter(tmp_path):
    renamed = _fno_file(tmp_path, "my_run.mat")
    unnamed = load_raw("navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": renamed}})
    assert (unnamed.attrs["viscosity"], unnamed.attrs["viscosity_from"]) == ("unknown", "unknown")
    given = load_raw(
        "navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": renamed, "viscosity": "1e-4"}}
    )  # YAML 1.1 reads 1e-4 as a string
    assert (given.attrs["viscosity"], given.attrs["viscosity_from"]) == (1e-4, "parameter")
    named = _fno_file(tmp_path, "ns_V1e-3_N3_T5.mat")
    from_name = load_raw(
        "navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": named, "viscosity": None}}
    )
    assert (from_name.attrs["viscosity"], from_name.attrs["viscosity_from"]) == (1e-3, "file name")


@pytest.mark.bad_input
@pytest.mark.parametrize("value, fragment", [(0, "must be > 0"), ("thin", "number")])
def test_fno_mat_bad_viscosity_names_the_parameter(tmp_path, value, fragment):
    path = _fno_file(tmp_path, "ns_V1e-3_N3_T5.mat")
    with pytest.raises(
        ConfigError, match=rf"navier_stokes\.source\.fno_mat\.viscosity.*{fragment}"
    ):
        load_raw(
            "navier_stokes", {"kind": "fno_mat", "fno_mat": {"path": path, "viscosity": value}}
        )


def test_base_parameters_list_fno_mat_viscosity():
    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "base" / "parameters_data.yml"
    params = yaml.safe_load(conf.read_text())
    assert params["navier_stokes"]["source"]["fno_mat"]["viscosity"] is None
    assert params["rayleigh_benard"]["source"]["the_well"]["fields"] == [
        "buoyancy", "velocity_x", "velocity_y", "pressure",
    ]  # fmt: skip
