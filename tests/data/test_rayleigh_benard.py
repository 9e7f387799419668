"""Rayleigh-Benard source: the free-slip solver's physics, The Well's reader and downloader."""

from __future__ import annotations

import functools
import http.server
import math
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sdkd_pipeline.data.raw import validate_raw
from sdkd_pipeline.data.sources.rayleigh_benard import (
    DEFAULT_PARAM_PREFIX,
    FREE_SLIP_CRITICAL_RAYLEIGH,
    FREE_SLIP_CRITICAL_WAVENUMBER,
    FreeSlipBlowUpError,
    FreeSlipBoussinesqSolver,
    FreeSlipRBCConfig,
    download_the_well_rbc,
    free_slip_growth_rate,
    generate_rayleigh_benard_free_slip,
    read_the_well_rbc,
    the_well_rbc_file_names,
    the_well_rbc_urls,
)
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

# A box that holds exactly the most unstable free-slip wavelength.
OPTIMAL_ASPECT = 2 * math.pi / FREE_SLIP_CRITICAL_WAVENUMBER


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cfg(**overrides) -> dict:
    base = dict(
        rayleigh=5e3,
        prandtl=1.0,
        aspect_ratio=OPTIMAL_ASPECT,
        nx=32,
        nz=16,
        dt=0.02,
        t_final=40.0,
        t_spinup=0.0,
        record_interval=2.0,
        n_trajectories=2,
        seed=3,
        perturbation_amplitude=1e-3,
        device="cpu",
        dtype="float64",
    )
    base.update(overrides)
    return base


# ---- spectral helpers on the output grid (cell centres, odd/even reflection about walls) ------


def _extend(f: np.ndarray, odd: bool) -> np.ndarray:
    mirrored = f[..., ::-1, :]
    return np.concatenate([f, -mirrored if odd else mirrored], axis=-2)


def _derivative(f: np.ndarray, axis: str, odd: bool, lx: float, order: int = 1) -> np.ndarray:
    """Spectral derivative of layer values (..., nz, nx) through the reflected extension."""
    nz = f.shape[-2]
    ext = _extend(f, odd)
    c = np.fft.rfft2(ext)
    kz = np.pi * np.fft.fftfreq(2 * nz, 1.0 / (2 * nz))[:, None]
    kx = 2 * np.pi / lx * np.arange(c.shape[-1])[None, :]
    k = kx if axis == "x" else kz
    return np.fft.irfft2((1j * k) ** order * c, s=ext.shape[-2:])[..., :nz, :]


def _dealias(f: np.ndarray, odd: bool) -> np.ndarray:
    """Keep the modes the solver keeps (2/3 rule), so products compare like with like."""
    nz, nx = f.shape[-2:]
    c = np.fft.rfft2(_extend(f, odd))
    mz = np.abs(np.fft.fftfreq(2 * nz, 1.0 / (2 * nz)))[:, None]
    mx = np.arange(c.shape[-1])[None, :]
    c = c * ((mz < 2 * nz / 3) & (mx < nx / 3))
    return np.fft.irfft2(c, s=(2 * nz, nx))[..., :nz, :]


def _channel(ds, name: str) -> np.ndarray:
    return ds["fields"].sel(channel=name).values.astype(np.float64)


# ---- physics ----------------------------------------------------------------------------------


def test_linear_growth_rate_matches_free_slip_dispersion_relation():
    ra, pr, k = 2000.0, 1.0, FREE_SLIP_CRITICAL_WAVENUMBER
    solver = FreeSlipBoussinesqSolver(
        rayleigh=ra, prandtl=pr, aspect_ratio=OPTIMAL_ASPECT, nx=16, nz=8, batch=1
    )
    x, z = solver.x[None, :], solver.z[:, None]
    mode = np.sin(np.pi * z) * np.cos(k * x)
    solver.set_state(1e-6 * mode[None])
    times, amps = [], []
    for t in np.arange(6.0, 21.0, 1.0):  # after the decaying eigenmode has died out
        solver.advance_to(t, dt_max=0.01, cfl=0.4)
        amps.append(abs((solver.theta()[0].numpy() * mode).sum()))
        times.append(t)
    measured = np.polyfit(times, np.log(amps), 1)[0]
    expected = free_slip_growth_rate(ra, pr, k)
    assert expected > 0.2
    assert measured == pytest.approx(expected, rel=2e-3)
    # Onset: the growth rate changes sign at Ra_c = 27 pi^4 / 4.
    assert free_slip_growth_rate(FREE_SLIP_CRITICAL_RAYLEIGH * 0.99, pr, k) < 0
    assert free_slip_growth_rate(FREE_SLIP_CRITICAL_RAYLEIGH * 1.01, pr, k) > 0


def test_conduction_state_stays_put_below_onset():
    ds = generate_rayleigh_benard_free_slip(
        small_cfg(rayleigh=500.0, nx=16, nz=8, record_interval=4.0, include_pressure=False),
        progress=False,
    )
    z = ds["y"].values[:, None]
    theta = _channel(ds, "buoyancy") - (1.0 - z)
    energy = (theta**2).mean(axis=(-2, -1)) + 0.5 * (
        _channel(ds, "velocity_x") ** 2 + _channel(ds, "velocity_y") ** 2
    ).mean(axis=(-2, -1))
    assert np.all(np.diff(energy[:, 1:], axis=1) < 0)  # decays once the noise has smoothed
    assert np.all(energy[:, -1] < 0.05 * energy[:, 1])
    assert np.abs(theta).max() < 5e-3  # never leaves the noise level (amplitude 1e-3)
    assert np.abs(theta[:, -1]).max() < 0.2 * np.abs(theta[:, 0]).max()


def test_convects_above_onset_kinetic_energy_grows_saturates_and_heat_flux_rises():
    cfg = small_cfg(rayleigh=5e3, t_final=50.0)
    ds = generate_rayleigh_benard_free_slip(cfg, progress=False)
    validate_raw(ds)
    u, w = _channel(ds, "velocity_x"), _channel(ds, "velocity_y")
    ke = 0.5 * (u**2 + w**2).mean(axis=(-2, -1))  # (trajectory, time)
    assert np.all(ke[:, -1] > 1e4 * ke[:, 1])  # grew from the noise
    assert np.all(np.abs(ke[:, -1] / ke[:, -2] - 1) < 0.02)  # and saturated
    assert np.all(np.isfinite(ds["fields"].values))
    z = ds["y"].values[:, None]
    theta = _channel(ds, "buoyancy") - (1.0 - z)
    kappa = 1.0 / math.sqrt(cfg["rayleigh"] * cfg["prandtl"])
    nusselt = 1.0 + (w * theta).mean(axis=(-2, -1)) / kappa
    assert np.all(nusselt[:, 0] == pytest.approx(1.0, abs=1e-3))
    assert np.all(nusselt[:, -1] > 1.5)
    # The velocity comes from a stream function: divergence-free to round-off (float32 output).
    div = _derivative(u, "x", odd=False, lx=cfg["aspect_ratio"]) + _derivative(
        w, "z", odd=True, lx=cfg["aspect_ratio"]
    )
    scale = np.abs(_derivative(u, "x", odd=False, lx=cfg["aspect_ratio"])).max()
    assert np.abs(div[:, -1]).max() < 1e-5 * scale


def test_pressure_closes_the_momentum_equations():
    ra, pr, lx = 5e3, 1.0, OPTIMAL_ASPECT
    solver = FreeSlipBoussinesqSolver(
        rayleigh=ra, prandtl=pr, aspect_ratio=lx, nx=32, nz=16, batch=1
    )
    rng = np.random.default_rng(0)
    solver.set_state(1e-2 * rng.standard_normal((1, 16, 32)))
    solver.advance_to(25.0, dt_max=0.02, cfl=0.4)  # well into nonlinear convection
    snaps = []
    delta = 1e-3
    for t in (25.0, 25.0 + delta, 25.0 + 2 * delta):
        solver.advance_to(t, dt_max=delta / 4, cfl=0.4)
        u, w = solver.velocity()
        b = solver.theta() + torch.as_tensor(1.0 - solver.z)[:, None]
        snaps.append([a[0].numpy() for a in (u, w, b, solver.pressure())])
    (u0, w0, _, _), (u, w, b, p), (u2, w2, _, _) = snaps
    nu = math.sqrt(pr / ra)

    def d(f, axis, odd, order=1):
        return _derivative(f, axis, odd, lx, order)

    res_x = (
        (u2 - u0) / (2 * delta)
        + _dealias(u * d(u, "x", False) + w * d(u, "z", False), odd=False)
        + d(p, "x", False)
        - nu * (d(u, "x", False, 2) + d(u, "z", False, 2))
    )
    # The hydrostatic part p_h = z - z^2/2 - 1/3 balances the background 1 - z of b exactly;
    # it is not even about the walls, so it is split off before the spectral z-derivative.
    z = solver.z[:, None]
    p_dynamic, theta = p - (z - z**2 / 2 - 1 / 3), b - (1 - z)
    res_z = (
        (w2 - w0) / (2 * delta)
        + _dealias(u * d(w, "x", True) + w * d(w, "z", True), odd=True)
        + d(p_dynamic, "z", False)
        - nu * (d(w, "x", True, 2) + d(w, "z", True, 2))
        - theta
    )
    assert np.abs(d(p, "x", False)).max() > 0.05  # the pressure gradient matters here
    assert np.abs(res_x).max() < 1e-3 * np.abs(d(p, "x", False)).max()
    assert np.abs(res_z).max() < 1e-3 * np.abs(theta).max()
    # Gauge: zero integral over the layer; the midpoint rule on the cell centres misses the
    # integral of the hydrostatic z^2/2 by exactly dz^2/24.
    assert p.mean() == pytest.approx(1 / (24 * 16**2), abs=1e-12)


def test_pressure_of_the_conduction_state_is_hydrostatic():
    solver = FreeSlipBoussinesqSolver(
        rayleigh=1e3, prandtl=1.0, aspect_ratio=2.0, nx=16, nz=8, batch=1
    )
    z = solver.z[:, None]
    expected = z - z**2 / 2 - 1 / 3  # dp/dz = b = 1 - z, zero mean
    assert np.allclose(solver.pressure()[0].numpy(), np.broadcast_to(expected, (8, 16)))


def test_dataset_contract_and_per_trajectory_seeding():
    cfg = small_cfg(nx=16, nz=8, t_final=1.0, record_interval=0.5)
    one = generate_rayleigh_benard_free_slip({**cfg, "n_trajectories": 1}, progress=False)
    two = generate_rayleigh_benard_free_slip(cfg, progress=False)
    assert two["fields"].dims == ("trajectory", "time", "channel", "y", "x")
    assert two["fields"].shape == (2, 3, 4, 8, 16)
    assert list(two["channel"].values) == ["buoyancy", "velocity_x", "velocity_y", "pressure"]
    assert two.attrs["dataset"] == "rayleigh_benard"
    assert two.attrs["source"] == "generated:rayleigh_benard_free_slip"
    assert two.attrs["solver_rayleigh"] == 5e3
    assert "free-slip" in two.attrs["solver"]
    np.testing.assert_allclose(two["time"].values, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(two["y"].values, (np.arange(8) + 0.5) / 8)
    np.testing.assert_allclose(two["x"].values, np.arange(16) * OPTIMAL_ASPECT / 16)
    # Trajectory 0 does not depend on how many others run beside it.
    np.testing.assert_allclose(
        one["fields"].values[0, 0], two["fields"].values[0, 0], rtol=0, atol=1e-7
    )
    assert not np.allclose(two["fields"].values[0, 0, 0], two["fields"].values[1, 0, 0])
    no_p = generate_rayleigh_benard_free_slip({**cfg, "include_pressure": False}, progress=False)
    assert list(no_p["channel"].values) == ["buoyancy", "velocity_x", "velocity_y"]


def test_default_config_is_valid_and_long_enough_for_10_to_10_windows():
    cfg = FreeSlipRBCConfig().validate()
    assert cfg.n_frames >= 100 and cfg.n_trajectories >= 8
    assert cfg.rayleigh > 100 * FREE_SLIP_CRITICAL_RAYLEIGH
    short = generate_rayleigh_benard_free_slip(
        {"n_trajectories": 2, "t_spinup": 10.0, "t_final": 11.0, "device": "cpu"}, progress=False
    )
    assert short["fields"].shape == (2, 5, 4, 32, 128)


def test_float32_solver_convects_without_blowing_up():
    ds = generate_rayleigh_benard_free_slip(
        small_cfg(dtype="float32", t_final=40.0, record_interval=10.0), progress=False
    )
    u = _channel(ds, "velocity_x")
    assert np.all(np.isfinite(u)) and np.abs(u[:, -1]).max() > 0.05


def test_blow_up_is_reported_with_the_parameters_to_change():
    cfg = small_cfg(
        rayleigh=1e9,
        nx=16,
        nz=8,
        cfl=1.5,
        dt=0.5,
        perturbation_amplitude=0.3,
        t_final=200.0,
        record_interval=10.0,
    )
    with pytest.raises(FreeSlipBlowUpError, match="nx"):
        generate_rayleigh_benard_free_slip(cfg, progress=False)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rayleigh", 0.0),
        ("rayleigh", -1e5),
        ("prandtl", 0.0),
        ("prandtl", float("nan")),
        ("aspect_ratio", -4.0),
        ("dt", -0.01),
        ("cfl", 3.0),
        ("t_final", 0.0),
        ("record_interval", 0.0),
        ("t_spinup", 100.0),
        ("nx", 4),
        ("nz", 2),
        ("n_trajectories", 0),
        ("seed", -1),
        ("perturbation_amplitude", -1e-3),
        ("dtype", "float16"),
        ("device", "tpu"),
        ("rayleigh", True),
        ("nx", 32.5),
        ("include_pressure", "yes"),
        ("rayleigh", "lots"),
    ],
)
def test_bad_config_names_the_parameter(key, value):
    with pytest.raises(ConfigError, match=rf"{DEFAULT_PARAM_PREFIX}\.{key}"):
        generate_rayleigh_benard_free_slip(small_cfg(**{key: value}), progress=False)


def test_unknown_config_key_and_yaml_strings():
    with pytest.raises(
        ConfigError,
        match=rf"^{DEFAULT_PARAM_PREFIX}\.viscosity: unknown parameter \(allowed: aspect_ratio, "
        r"cfl, .*, t_spinup\)$",
    ):
        FreeSlipRBCConfig.from_params({"viscosity": 1e-3})
    assert FreeSlipRBCConfig.from_params({"rayleigh": "1e6"}).rayleigh == 1e6  # YAML's "1e6"
    assert FreeSlipRBCConfig.from_params({"nx": 64.0}).nx == 64  # a whole float is a count
    with pytest.raises(ConfigError, match=r"^rb\.nx must be >= 8, got 4$"):
        FreeSlipRBCConfig.from_params({"nx": 4}, "rb")
    with pytest.raises(ConfigError, match=r"^rb\.cfl = 3\.0: must be <= 1\.5 \(AB2 advection"):
        FreeSlipRBCConfig.from_params({"cfl": 3.0}, "rb")
    with pytest.raises(ConfigError, match=rf"^{DEFAULT_PARAM_PREFIX}\.nz must be an integer, got"):
        FreeSlipRBCConfig(nz=16.0).validate()  # built in code: checked, but not coerced
    with pytest.raises(ConfigError, match=r"initial_theta has shape"):
        generate_rayleigh_benard_free_slip(
            small_cfg(), progress=False, initial_theta=np.zeros((1, 3, 3))
        )


# ---- The Well ---------------------------------------------------------------------------------


def write_well_file(
    path: Path,
    *,
    n_traj: int = 2,
    n_t: int = 5,
    nx: int = 16,
    ny: int = 8,
    rayleigh: float = 1e6,
    prandtl: float = 1.0,
    t0: float = 0.0,
    velocity: bool = True,
) -> dict:
    """A file in The Well's layout (fields stored (traj, time, x, y), y on Chebyshev nodes)."""
    x = np.linspace(0, 4, nx, endpoint=False, dtype=np.float32)
    y = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ny) + 0.5) / ny)).astype(np.float32)
    time = (t0 + 0.25 * np.arange(n_t)).astype(np.float32)
    tr, tt, ii, jj = np.meshgrid(
        np.arange(n_traj), np.arange(n_t), np.arange(nx), np.arange(ny), indexing="ij"
    )
    code = (1000 * tr + 100 * tt + 10 * jj + ii / 100).astype(np.float32)  # unique per cell
    with h5py.File(path, "w") as f:
        f.attrs["dataset_name"] = "rayleigh_benard"
        f.attrs["grid_type"] = "cartesian"
        f.attrs["n_spatial_dims"] = 2
        f.attrs["n_trajectories"] = n_traj
        f.attrs["simulation_parameters"] = ["Rayleigh", "Prandtl"]
        f.attrs["Rayleigh"] = rayleigh
        f.attrs["Prandtl"] = prandtl
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        for name, values in (("time", time), ("x", x), ("y", y)):
            ds = dims.create_dataset(name, data=values)
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = False
        bcs = f.create_group("boundary_conditions")
        for name, kind, dim in (("x_periodic", "PERIODIC", "x"), ("y_wall", "WALL", "y")):
            g = bcs.create_group(name)
            g.attrs["bc_type"] = kind
            g.attrs["associated_dims"] = [dim]
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Rayleigh", "Prandtl"]
        for name, value in (("Rayleigh", rayleigh), ("Prandtl", prandtl)):
            ds = scalars.create_dataset(name, data=np.float32(value))
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = False
        t0g = f.create_group("t0_fields")
        t0g.attrs["field_names"] = ["buoyancy", "pressure"]
        for name, values in (("buoyancy", code), ("pressure", -code)):
            ds = t0g.create_dataset(name, data=values)
            ds.attrs["dim_varying"] = [True, True]
            ds.attrs["sample_varying"] = True
            ds.attrs["time_varying"] = True
        t1g = f.create_group("t1_fields")
        t1g.attrs["field_names"] = ["velocity"] if velocity else []
        if velocity:
            ds = t1g.create_dataset("velocity", data=np.stack([code + 0.5, code + 0.25], axis=-1))
            ds.attrs["dim_varying"] = [True, True]
            ds.attrs["sample_varying"] = True
            ds.attrs["time_varying"] = True
        f.create_group("t2_fields").attrs["field_names"] = []
    return {"x": x, "y": y, "time": time, "code": code}


def test_reader_maps_the_wells_layout_onto_the_contract(tmp_path):
    meta = write_well_file(tmp_path / "a.hdf5", n_traj=2)
    ds = read_the_well_rbc(tmp_path / "a.hdf5")
    assert ds["fields"].dims == ("trajectory", "time", "channel", "y", "x")
    assert ds["fields"].shape == (2, 5, 4, 8, 16)  # y = 8 vertical rows, x = 16 columns
    assert list(ds["channel"].values) == ["buoyancy", "velocity_x", "velocity_y", "pressure"]
    np.testing.assert_allclose(ds["y"].values, meta["y"])  # Chebyshev nodes kept
    np.testing.assert_allclose(ds["x"].values, meta["x"])
    np.testing.assert_allclose(ds["time"].values, meta["time"])
    code = meta["code"]  # stored (traj, time, x, y)
    tr, t, j, i = 1, 3, 6, 11  # (trajectory, time, y row, x column)
    assert ds["fields"].values[tr, t, 0, j, i] == code[tr, t, i, j]
    assert ds["fields"].values[tr, t, 1, j, i] == code[tr, t, i, j] + 0.5
    assert ds["fields"].values[tr, t, 2, j, i] == code[tr, t, i, j] + 0.25
    assert ds["fields"].values[tr, t, 3, j, i] == -code[tr, t, i, j]
    assert list(ds["rayleigh"].values) == [1e6, 1e6]
    assert ds.attrs["dataset"] == "rayleigh_benard"


def test_reader_concatenates_files_selects_fields_and_reads_lazily(tmp_path):
    (tmp_path / "train").mkdir()
    write_well_file(tmp_path / "train" / "r6.hdf5", n_traj=2, rayleigh=1e6, prandtl=1.0)
    write_well_file(tmp_path / "train" / "r7.hdf5", n_traj=3, rayleigh=1e7, prandtl=0.1)
    ds = read_the_well_rbc([tmp_path], fields=("velocity_y", "buoyancy"))
    assert ds["fields"].shape == (5, 5, 2, 8, 16)
    assert list(ds["channel"].values) == ["buoyancy", "velocity_y"]  # the one channel order
    np.testing.assert_allclose(ds["rayleigh"].values, [1e6, 1e6, 1e7, 1e7, 1e7])
    np.testing.assert_allclose(ds["prandtl"].values, [1, 1, 0.1, 0.1, 0.1], rtol=1e-6)
    assert list(ds["file_trajectory"].values) == [0, 1, 0, 1, 2]
    assert list(ds["source_file"].values)[2] == "r7.hdf5"
    some = read_the_well_rbc(tmp_path, trajectories_per_file=1)
    assert some["fields"].shape[0] == 2
    pytest.importorskip("dask")
    lazy = read_the_well_rbc([tmp_path], fields=("velocity_y", "buoyancy"), lazy=True)
    assert hasattr(lazy["fields"].data, "dask")
    np.testing.assert_array_equal(lazy["fields"].values, ds["fields"].values)
    np.testing.assert_array_equal(lazy["fields"][1:4, 2:4].values, ds["fields"][1:4, 2:4].values)


def test_reader_refuses_files_with_different_grids(tmp_path):
    write_well_file(tmp_path / "a.hdf5")
    write_well_file(tmp_path / "b.hdf5", t0=10.0)
    with pytest.raises(DataError, match=r"b\.hdf5.*'time' grid"):
        read_the_well_rbc([tmp_path / "a.hdf5", tmp_path / "b.hdf5"])
    write_well_file(tmp_path / "c.hdf5", ny=12)
    with pytest.raises(DataError, match=r"c\.hdf5"):
        read_the_well_rbc([tmp_path / "a.hdf5", tmp_path / "c.hdf5"])


def test_reader_bad_files(tmp_path):
    write_well_file(tmp_path / "novel.hdf5", velocity=False)
    with pytest.raises(DataError, match=r"novel\.hdf5.*t1_fields/velocity"):
        read_the_well_rbc(tmp_path / "novel.hdf5")
    assert read_the_well_rbc(tmp_path / "novel.hdf5", fields=["buoyancy"])["fields"].shape[2] == 1

    good = tmp_path / "good.hdf5"
    write_well_file(good)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.hdf5"):
        read_the_well_rbc(truncated)
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match=r"text\.h5.*not a readable HDF5"):
        read_the_well_rbc(tmp_path / "text.h5")

    shape = tmp_path / "shape.hdf5"
    write_well_file(shape)
    with h5py.File(shape, "a") as f:
        del f["t0_fields/pressure"]
        f["t0_fields"].create_dataset("pressure", data=np.zeros((2, 5, 8, 16), np.float32))
    with pytest.raises(DataError, match=r"shape\.hdf5.*'t0_fields/pressure' has shape"):
        read_the_well_rbc(shape)

    nan = tmp_path / "nan.hdf5"
    write_well_file(nan)
    with h5py.File(nan, "a") as f:
        f["t0_fields/buoyancy"][1, 2, 3, 4] = np.nan
    with pytest.raises(DataError, match=r"nan\.hdf5.*trajectory 1.*buoyancy"):
        read_the_well_rbc(nan)

    nodims = tmp_path / "nodims.hdf5"
    write_well_file(nodims)
    with h5py.File(nodims, "a") as f:
        del f["dimensions/y"]
    with pytest.raises(DataError, match=r"nodims\.hdf5.*dimensions/y"):
        read_the_well_rbc(nodims)


def test_reader_missing_files_and_bad_arguments(tmp_path):
    with pytest.raises(MissingRawDataError, match=r"data/01_raw/rayleigh_benard.*download"):
        read_the_well_rbc(tmp_path / "absent.hdf5")
    with pytest.raises(MissingRawDataError, match=r"no \.hdf5"):
        read_the_well_rbc(tmp_path)
    write_well_file(tmp_path / "a.hdf5")
    with pytest.raises(ConfigError, match=r"the_well\.fields"):
        read_the_well_rbc(tmp_path, fields=["temperature"])
    with pytest.raises(ConfigError, match=r"the_well\.trajectories_per_file"):
        read_the_well_rbc(tmp_path, trajectories_per_file=0)


def test_the_well_urls():
    names = the_well_rbc_file_names()
    assert len(names) == 35 and "rayleigh_benard_Rayleigh_1e8_Prandtl_2e-1.hdf5" in names
    assert the_well_rbc_urls("valid", ["rayleigh_benard_Rayleigh_1e6_Prandtl_1.hdf5"]) == [
        "https://sdsc-users.flatironinstitute.org/~polymathic/data/the_well/datasets/"
        "rayleigh_benard/data/valid/rayleigh_benard_Rayleigh_1e6_Prandtl_1.hdf5"
    ]
    assert the_well_rbc_urls(base_url="http://mirror.example/well/")[0].startswith(
        "http://mirror.example/well/datasets/rayleigh_benard/data/train/"
    )
    with pytest.raises(ConfigError, match=r"the_well\.split"):
        the_well_rbc_urls("validation")
    with pytest.raises(ConfigError, match=r"the_well\.files"):
        the_well_rbc_urls("train", ["../etc/passwd.hdf5"])
    with pytest.raises(ConfigError, match=r"the_well\.base_url"):
        the_well_rbc_urls("train", None, "ftp://x")


@pytest.fixture
def local_well_server(tmp_path):
    root = tmp_path / "server"
    folder = root / "datasets" / "rayleigh_benard" / "data" / "train"
    folder.mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_then_read(tmp_path, local_well_server):
    folder, base_url = local_well_server
    name = "rayleigh_benard_Rayleigh_1e6_Prandtl_1.hdf5"
    write_well_file(folder / name, n_traj=1)
    dest = tmp_path / "raw"
    got = download_the_well_rbc(
        dest, split="train", files=[name], base_url=base_url, progress=False
    )
    assert got == [dest / "train" / name]
    assert got[0].read_bytes() == (folder / name).read_bytes()
    ds = read_the_well_rbc(dest)
    assert ds["fields"].shape == (1, 5, 4, 8, 16)
