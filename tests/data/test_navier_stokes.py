"""The Navier-Stokes source: solver physics, GRF statistics, generator contract, FNO readers."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from sdkd_pipeline.data.raw import RAW_DIMS
from sdkd_pipeline.data.sources import navier_stokes as ns
from sdkd_pipeline.data.sources.navier_stokes.solver import _TINY, _flush_tiny
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

LAYOUTS = ["half", "packed"]


def _mode_field(n: int, modes: list[tuple[float, int, int, str]]) -> np.ndarray:
    """Sum of amplitude * cos/sin(2 pi (kx x + ky y)) on the (y, x) grid."""
    y, x = np.meshgrid(ns.grid(n), ns.grid(n), indexing="ij")
    out = np.zeros((n, n))
    for amp, kx, ky, kind in modes:
        phase = 2 * np.pi * (kx * x + ky * y)
        out += amp * (np.cos(phase) if kind == "cos" else np.sin(phase))
    return out


# ---------------------------------------------------------------------------------------------
# Solver physics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unforced_shell_modes_decay_by_the_crank_nicolson_factor(layout: str) -> None:
    # Modes on one wavenumber shell (|k| = 5) make psi proportional to w, so u.grad(w) = 0
    # exactly: only viscosity acts, and each step multiplies by (1 - a) / (1 + a). A wrong sign
    # or a swapped axis in the velocity would make the nonlinear term non-zero here.
    n, nu, dt, steps = 32, 1e-2, 1e-3, 200
    w0 = _mode_field(n, [(1.0, 3, 4, "cos"), (0.5, 5, 0, "sin"), (0.7, 4, -3, "cos")])
    solver = ns.VorticitySolver(
        n, viscosity=nu, dt=dt, forcing_amplitude=0.0, dtype=torch.float64, layout=layout
    )
    state = solver.advance(solver.to_state(w0[None]), steps)
    w = solver.to_physical(state)[0].numpy()

    a = 0.5 * dt * nu * 4 * np.pi**2 * 25
    cn_factor = ((1 - a) / (1 + a)) ** steps
    np.testing.assert_allclose(w, cn_factor * w0, rtol=0, atol=1e-12)
    # ...and that is close to the exact decay exp(-nu |2 pi k|^2 t) = exp(-2 a steps): CN's
    # log-factor is -2 (a + a^3/3 + ...), so the gap is steps * (2/3) a^3 (here ~1.6e-5).
    exact = math.exp(-nu * 4 * np.pi**2 * 25 * dt * steps)
    predicted_gap = steps * (2.0 / 3.0) * a**3
    assert abs(cn_factor / exact - 1) < 1e-4
    assert abs(-math.log(cn_factor / exact) - predicted_gap) < 0.01 * predicted_gap


def test_nonlinear_term_matches_the_analytic_jacobian() -> None:
    # w = A cos(2 pi x) + B cos(4 pi y): psi = A cos(2 pi x)/(4 pi^2) + B cos(4 pi y)/(16 pi^2),
    # u = psi_y = -B sin(4 pi y)/(4 pi), v = -psi_x = A sin(2 pi x)/(2 pi), and
    # u w_x + v w_y = -1.5 A B sin(2 pi x) sin(4 pi y).
    n, amp_a, amp_b = 32, 1.3, -0.7
    w = _mode_field(n, [(amp_a, 1, 0, "cos"), (amp_b, 0, 2, "cos")])
    y, x = np.meshgrid(ns.grid(n), ns.grid(n), indexing="ij")
    expected = -1.5 * amp_a * amp_b * np.sin(2 * np.pi * x) * np.sin(4 * np.pi * y)
    for layout in LAYOUTS:
        solver = ns.VorticitySolver(n, viscosity=1e-3, dt=1e-3, dtype=torch.float64, layout=layout)
        got = solver.nonlinear_term(solver.to_state(w[None]))[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-12)
        u, v = solver.velocity(solver.to_state(w[None]))[0].numpy()
        np.testing.assert_allclose(u, -amp_b * np.sin(4 * np.pi * y) / (4 * np.pi), atol=1e-13)
        np.testing.assert_allclose(v, amp_a * np.sin(2 * np.pi * x) / (2 * np.pi), atol=1e-13)


def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity() -> None:
    n = 64
    w0 = ns.sample_initial_vorticity(n, [0, 1], seed=3)
    solver = ns.VorticitySolver(n, viscosity=1e-3, dt=1e-3, dtype=torch.float64)
    u, v = solver.velocity(solver.to_state(w0)).numpy().transpose(1, 0, 2, 3)
    ky = np.fft.fftfreq(n, 1 / n)[:, None]
    kx = np.fft.fftfreq(n, 1 / n)[None, :]
    u_h, v_h = np.fft.fft2(u), np.fft.fft2(v)
    divergence = 2j * np.pi * (kx * u_h + ky * v_h)
    curl = 2j * np.pi * (kx * v_h - ky * u_h)
    scale = np.abs(np.fft.fft2(w0)).max()
    assert np.abs(divergence).max() < 1e-12 * scale
    # Away from the Nyquist modes (no derivative there) curl(u) reproduces w exactly.
    inner = (np.abs(ky) < n / 2) & (np.abs(kx) < n / 2)
    err = np.abs(np.where(inner, curl - np.fft.fft2(w0), 0)).max()
    assert err < 1e-10 * scale


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("downsample", ["spectral", "stride"])
def test_torch_batch_matches_the_numpy_reference(layout: str, downsample: str) -> None:
    n, m = 32, 16
    w0 = ns.sample_initial_vorticity(n, range(3), seed=5)
    kwargs = dict(viscosity=1e-3, dt=2e-3, forcing_amplitude=0.1)
    reference = np.stack(
        [
            ns.simulate_vorticity_numpy(
                w,
                n_records=3,
                steps_per_record=20,
                record_resolution=m,
                downsample=downsample,
                **kwargs,
            )
            for w in w0
        ]
    )
    solver = ns.VorticitySolver(n, dtype=torch.float64, layout=layout, **kwargs)
    records, diag = solver.simulate(
        w0, n_records=3, steps_per_record=20, record_resolution=m, downsample=downsample
    )
    assert not diag.blown_up.any()
    np.testing.assert_allclose(records.numpy(), reference, rtol=0, atol=1e-12)
    # The solution actually moved (forcing + advection), so the agreement means something.
    assert np.abs(reference[:, -1] - reference[:, 0]).max() > 1e-3


def test_spectral_downsampling_removes_what_striding_aliases() -> None:
    n, m = 32, 8
    low = _mode_field(n, [(1.0, 1, 2, "cos"), (0.3, -3, 1, "sin")])  # |k_i| < m / 2
    high = _mode_field(n, [(0.5, 9, 0, "cos")])  # k = 9 aliases to k = 1 on an 8-grid
    solver = ns.VorticitySolver(n, viscosity=1e-3, dt=1e-3, dtype=torch.float64)
    state = solver.to_state(np.stack([low, low + high]))
    spectral = solver.to_physical(state, m, "spectral").numpy()
    strided = solver.to_physical(state, m, "stride").numpy()
    np.testing.assert_allclose(spectral[0], low[::4, ::4], atol=1e-13)
    np.testing.assert_allclose(strided[0], low[::4, ::4], atol=1e-13)
    np.testing.assert_allclose(spectral[1], low[::4, ::4], atol=1e-13)  # k = 9 removed
    assert np.abs(strided[1] - low[::4, ::4]).max() > 0.4  # k = 9 folded onto k = 1


# ---------------------------------------------------------------------------------------------
# Gaussian random field
# ---------------------------------------------------------------------------------------------


def test_grf_has_the_intended_spectrum_and_zero_mean() -> None:
    n, n_samples, alpha, tau = 32, 400, 2.5, 7.0
    sigma = tau ** (alpha - 1)
    w0 = ns.sample_initial_vorticity(n, range(n_samples), seed=11, alpha=alpha, tau=tau)
    np.testing.assert_allclose(w0.mean(axis=(1, 2)), 0, atol=1e-15)
    power = np.abs(np.fft.fft2(w0)) ** 2  # (samples, n, n)
    ky = np.fft.fftfreq(n, 1 / n)[:, None]
    kx = np.fft.fftfreq(n, 1 / n)[None, :]
    k2 = kx**2 + ky**2
    model = n**4 * sigma**2 * (4 * np.pi**2 * k2 + tau**2) ** (-alpha)
    shell = np.rint(np.sqrt(k2)).astype(int)
    ratio = power.mean(axis=0) / np.where(k2 > 0, model, 1)
    shells = range(1, n // 2)
    for k in shells:
        sel = shell == k
        # Each |w_h(k)|^2 / model is exponential (mean 1); pairs (k, -k) are identical.
        n_independent = n_samples * max(1, sel.sum() // 2)
        std_error = 1 / math.sqrt(n_independent)
        assert abs(ratio[sel].mean() - 1) < 5 * std_error, (k, ratio[sel].mean())
    # Power-law slope over the shells, against the model's own slope (-2 alpha asymptotically).
    ks = np.arange(4, n // 2)
    measured = np.array([power.mean(axis=0)[shell == k].mean() for k in ks])
    expected = np.array([model[shell == k].mean() for k in ks])
    slope_measured = np.polyfit(np.log(ks), np.log(measured), 1)[0]
    slope_expected = np.polyfit(np.log(ks), np.log(expected), 1)[0]
    assert abs(slope_measured - slope_expected) < 0.1
    assert -2 * alpha - 0.1 < slope_expected < -2 * alpha + 1.0
    # The pointwise variance equals the analytic sum over modes.
    expected_ms, _ = ns.grf_expected_mean_square(n, alpha, tau)
    assert abs(np.mean(w0**2) / expected_ms - 1) < 0.1


def test_grf_noise_is_per_trajectory_and_complex_unit_variance() -> None:
    a = ns.sample_initial_vorticity(16, [0, 1, 2], seed=7)
    b = ns.sample_initial_vorticity(16, [2], seed=7)
    np.testing.assert_array_equal(a[2], b[0])  # independent of which others are drawn
    noise = np.stack([ns.grf_noise(0, i, 64) for i in range(8)])
    assert abs(np.mean(np.abs(noise) ** 2) - 1) < 0.02
    assert abs(np.var(noise.real) - 0.5) < 0.02  # torch's complex randn convention


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------

TINY = dict(
    n_trajectories=3,
    resolution=32,
    record_resolution=16,
    viscosity=1e-3,
    dt=5e-3,
    t_final=0.2,
    record_every=0.05,
    device="cpu",
)


def test_generate_returns_the_raw_contract_with_provenance() -> None:
    ds = ns.generate_navier_stokes(TINY, progress=False)
    assert tuple(ds["fields"].dims) == RAW_DIMS
    assert ds["fields"].shape == (3, 4, 1, 16, 16)
    assert list(ds["channel"].values) == ["vorticity"]
    np.testing.assert_allclose(ds["time"].values, [0.05, 0.1, 0.15, 0.2])
    np.testing.assert_allclose(ds["x"].values, np.arange(16) / 16)
    assert ds.attrs["dataset"] == "navier_stokes"
    assert ds.attrs["source"] == "generated:navier_stokes_pseudospectral"
    for key in (
        "viscosity",
        "dt_used",
        "resolution",
        "record_resolution",
        "seed",
        "forcing_amplitude",
        "grf_alpha",
        "grf_tau",
        "grf_sigma_used",
        "downsample",
        "steps_per_record",
        "max_stability_number",
        "dropped_trajectories",
    ):
        assert key in ds.attrs, key
    assert ds.attrs["steps_per_record"] == 10
    assert all(isinstance(v, (str, int, float)) for v in ds.attrs.values())
    with_initial = ns.generate_navier_stokes(
        {**TINY, "include_initial_state": True}, progress=False
    )
    np.testing.assert_allclose(with_initial["time"].values, [0, 0.05, 0.1, 0.15, 0.2])
    np.testing.assert_array_equal(with_initial["fields"].values[:, 1:], ds["fields"].values)
    # Frame 0 is the GRF draw, spectrally truncated to |k| < 8: band-limited, so it equals the
    # point values of the filtered field on the coarse grid.
    w0_h = np.fft.fft2(ns.sample_initial_vorticity(32, range(3), seed=0))
    k = np.fft.fftfreq(32, 1 / 32)
    w0_h[:, (np.abs(k) >= 8)[:, None] | (np.abs(k) >= 8)[None, :]] = 0
    filtered = np.fft.ifft2(w0_h).real[:, ::2, ::2]
    np.testing.assert_allclose(with_initial["fields"].values[:, 0, 0], filtered, atol=1e-6)


def test_generate_is_deterministic_and_independent_of_batching() -> None:
    a = ns.generate_navier_stokes(TINY, progress=False)
    again = ns.generate_navier_stokes(TINY, progress=False)
    np.testing.assert_array_equal(a["fields"].values, again["fields"].values)
    b = ns.generate_navier_stokes({**TINY, "batch_size": 2}, progress=False)
    c = ns.generate_navier_stokes({**TINY, "seed": 1}, progress=False)
    # Same trajectories whatever the batching (equal to float32 round-off: FFT batching may
    # change the summation order).
    np.testing.assert_allclose(a["fields"].values, b["fields"].values, rtol=0, atol=1e-6)
    assert np.abs(a["fields"].values - c["fields"].values).max() > 1e-2


def test_a_priori_dt_bound_refuses_the_unstable_fno_setting() -> None:
    fno = dict(resolution=256, record_resolution=64, viscosity=1e-5, t_final=20.0)
    ns.NavierStokesConfig(dt=1e-4, **fno).validate()  # FNO's recipe passes
    with pytest.raises(ConfigError, match=r"navier_stokes\.source\.generate\.dt = 0\.001"):
        ns.NavierStokesConfig(dt=1e-3, **fno).validate()  # the one that blew up
    auto = ns.NavierStokesConfig(dt=None, **fno)
    assert auto.resolved_dt == pytest.approx(1e-4)
    assert auto.resolved_dt <= ns.stable_dt(auto)


def test_runtime_blowup_is_detected_flagged_and_raised() -> None:
    n = 32
    w0 = ns.sample_initial_vorticity(n, [0, 1], seed=0)
    w0[1] *= 30  # strong second trajectory + a huge step: forward Euler explodes
    solver = ns.VorticitySolver(n, viscosity=1e-4, dt=0.05, dtype=torch.float64)
    records, diag = solver.simulate(w0, n_records=6, steps_per_record=2)
    assert diag.blown_up.tolist() == [False, True]
    assert np.isfinite(records[0].numpy()).all()
    assert np.isnan(records[1, -1].numpy()).all()
    assert np.isfinite(diag.blowup_time[1]) and np.isnan(diag.blowup_time[0])

    unstable = dict(
        TINY,
        viscosity=1e-5,
        dt=0.05,
        record_every=0.05,
        t_final=0.5,
        grf_sigma=30 * 7**1.5,
        dt_limit_factor=1e6,
    )
    with pytest.raises(ConfigError, match=r"navier_stokes\.source\.generate\.dt.*blew up"):
        ns.generate_navier_stokes(unstable, progress=False)
    with pytest.raises(ConfigError, match="every trajectory blew up"):
        ns.generate_navier_stokes({**unstable, "on_blowup": "drop"}, progress=False)


@pytest.mark.parametrize(
    ("override", "field", "fragment"),
    [
        ({"viscosity": 0.0}, "viscosity", "> 0"),
        ({"viscosity": -1e-3}, "viscosity", "> 0"),
        ({"dt": 0.0}, "dt", "> 0"),
        ({"dt": 0.003}, "dt", "whole number of steps"),
        ({"resolution": 63}, "resolution", "even"),
        ({"record_resolution": 48}, "record_resolution", "must divide"),
        ({"record_resolution": 128}, "record_resolution", "must divide"),
        ({"t_final": 2.5}, "t_final", "whole multiple"),
        ({"record_every": -1.0}, "record_every", "> 0"),
        ({"n_trajectories": 0}, "n_trajectories", ">= 1"),
        ({"n_trajectories": 2.5}, "n_trajectories", "integer"),
        ({"downsample": "bilinear"}, "downsample", "spectral"),
        ({"dtype": "float16"}, "dtype", "float32"),
        ({"on_blowup": "ignore"}, "on_blowup", "raise"),
        ({"layout": "diagonal"}, "layout", "half"),
        ({"viscosity": "a lot"}, "viscosity", "number"),
        ({"compile": "yes"}, "compile", "true or false"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
    ],
)
def test_bad_config_names_the_parameter(override: dict, field: str, fragment: str) -> None:
    params = {"t_final": 3.0, **override}
    with pytest.raises(ConfigError, match=rf"navier_stokes\.source\.generate\.{field}") as err:
        ns.NavierStokesConfig.from_params(params)
    assert fragment in str(err.value)


def test_unknown_key_and_unavailable_device_are_config_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^navier_stokes\.source\.generate\.visocity: unknown parameter \(allowed: "
        r"batch_size, .*, viscosity\)$",
    ):
        ns.NavierStokesConfig.from_params({"visocity": 1e-3})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"generate\.device"):
            ns.NavierStokesConfig.from_params({"device": "cuda"})


def test_yaml_style_values_are_accepted() -> None:
    cfg = ns.NavierStokesConfig.from_params(
        {"viscosity": "1e-3", "dt": None, "resolution": 64.0, "t_final": 4}
    )
    assert cfg.viscosity == 1e-3 and cfg.resolution == 64 and cfg.dt is None
    assert cfg.n_records == 4 and cfg.steps_per_record * cfg.resolved_dt == pytest.approx(1.0)
    assert type(cfg.resolution) is int and type(cfg.t_final) is float


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"viscosity": 0}, r"viscosity must be > 0, got 0\.0$"),
        ({"resolution": 4}, r"resolution must be >= 8, got 4$"),
        ({"resolution": 66, "record_resolution": 33}, r"record_resolution must be even, got 33$"),
        ({"grf_sigma": -1.0}, r"grf_sigma must be > 0, got -1\.0$"),
        ({"batch_size": 2.5}, r"batch_size must be an integer or null, got 2\.5$"),
        (
            {"layout": "diagonal"},
            r"layout must be one of 'half', 'packed', 'auto', got 'diagonal'$",
        ),
        ({"t_spinup": -1.0}, r"t_spinup must be >= 0, got -1\.0$"),
    ],
)
def test_bad_values_get_the_loaders_message(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^navier_stokes\.source\.generate\." + message):
        ns.NavierStokesConfig.from_params({"t_final": 3.0, **params})


def test_a_config_built_in_code_is_checked_by_validate() -> None:
    with pytest.raises(ConfigError, match=r"^ns\.resolution must be an integer, got 64\.0$"):
        ns.NavierStokesConfig(resolution=64.0).validate("ns")  # checked, not coerced
    with pytest.raises(ConfigError, match=r"^navier_stokes\.source\.generate\.seed must be >= 0"):
        ns.NavierStokesConfig(seed=-1).validate()


@pytest.mark.slow
def test_compiled_step_matches_eager() -> None:
    n = 16
    w0 = ns.sample_initial_vorticity(n, range(2), seed=2)
    for layout in LAYOUTS:
        eager = ns.VorticitySolver(n, viscosity=1e-3, dt=1e-3, dtype=torch.float64, layout=layout)
        compiled = ns.VorticitySolver(
            n, viscosity=1e-3, dt=1e-3, dtype=torch.float64, layout=layout, compile=True
        )
        a = eager.advance(eager.to_state(w0), 5)
        b = compiled.advance(compiled.to_state(w0), 5)
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# FNO .mat files
# ---------------------------------------------------------------------------------------------


def _fno_arrays(n_traj: int = 3, s: int = 8, t: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((n_traj, s, s)).astype(np.float32),
        "u": rng.standard_normal((n_traj, s, s, t)).astype(np.float32),
        "t": np.arange(1, t + 1, dtype=np.float64)[None, :] * 1.0,
    }


def _write_v73(path, arrays: dict[str, np.ndarray]) -> None:
    """An HDF5 file laid out like MATLAB v7.3: 512-byte user block, column-major (reversed)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            dset = f.create_dataset(name, data=np.ascontiguousarray(np.transpose(value)))
            dset.attrs["MATLAB_class"] = np.bytes_("single")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


@pytest.fixture(params=["v5", "v73"])
def fno_file(request, tmp_path):
    arrays = _fno_arrays()
    if request.param == "v5":
        path = tmp_path / "NavierStokes_V1e-5_N3_T5.mat"
        scipy.io.savemat(path, arrays)
    else:
        path = tmp_path / "ns_V1e-3_N3_T5.mat"
        _write_v73(path, arrays)
    return path, arrays, request.param


def test_read_fno_mat_both_layouts(fno_file) -> None:
    path, arrays, layout = fno_file
    if layout == "v73":
        assert h5py.is_hdf5(path)
        assert scipy.io.matlab.matfile_version(path)[0] == 2  # scipy sees a v7.3 header
    ds = ns.read_fno_mat(path)
    u = arrays["u"]
    assert tuple(ds["fields"].dims) == RAW_DIMS
    assert ds["fields"].shape == (3, 5, 1, 8, 8)
    # FNO's u is (n, x, y, t): fields[n, t, 0, y, x] == u[n, x, y, t]
    np.testing.assert_array_equal(ds["fields"].values[:, :, 0], np.transpose(u, (0, 3, 2, 1)))
    assert ds["fields"].values[1, 3, 0, 2, 5] == u[1, 5, 2, 3]
    np.testing.assert_allclose(ds["time"].values, [1, 2, 3, 4, 5])
    assert ds.attrs["viscosity"] == (1e-5 if layout == "v5" else 1e-3)
    assert ds.attrs["source"] == str(path)
    with_a = ns.read_fno_mat(path, viscosity=2e-4, include_initial_state=True, max_trajectories=2)
    assert with_a["fields"].shape == (2, 6, 1, 8, 8)
    np.testing.assert_allclose(with_a["time"].values, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(
        with_a["fields"].values[:, 0, 0], np.transpose(arrays["a"][:2], (0, 2, 1))
    )
    assert with_a.attrs["viscosity"] == 2e-4
    with pytest.raises(
        ConfigError, match=r"^navier_stokes\.source\.fno_mat\.max_trajectories must be >= 1, got 0$"
    ):
        ns.read_fno_mat(path, max_trajectories=0)


def test_read_fno_mat_missing_file_says_where_and_offers_generate(tmp_path) -> None:
    with pytest.raises(MissingRawDataError) as err:
        ns.read_fno_mat(tmp_path / "NavierStokes_V1e-5_N1200_T20.mat")
    message = str(err.value)
    assert "NavierStokes_V1e-5_N1200_T20.mat" in message
    assert "data/01_raw/navier_stokes" in message and "generate" in message


@pytest.mark.parametrize("layout", ["v5", "v73"])
@pytest.mark.parametrize("case", ["truncated", "no_u", "wrong_dims", "nan", "inf"])
def test_read_fno_mat_bad_files(tmp_path, layout: str, case: str) -> None:
    arrays = _fno_arrays()
    if case == "no_u":
        arrays.pop("u")
    elif case == "wrong_dims":
        arrays["u"] = arrays["u"][..., 0]
    elif case == "nan":
        arrays["u"][1, 2, 3, 4] = np.nan
    elif case == "inf":
        arrays["u"][0, 0, 0, 0] = np.inf
    path = tmp_path / f"ns_{case}.mat"
    if layout == "v5":
        scipy.io.savemat(path, arrays)
    else:
        _write_v73(path, arrays)
    if case == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    expected = {
        "truncated": "truncated or corrupt",
        "no_u": "no variable 'u'",
        "wrong_dims": "expected 4",
        "nan": "NaN/Inf",
        "inf": "NaN/Inf",
    }[case]
    with pytest.raises(DataError, match=expected) as err:
        ns.read_fno_mat(path)
    assert str(path) in str(err.value)


def test_read_fno_mat_garbage_bytes(tmp_path) -> None:
    path = tmp_path / "ns_garbage.mat"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="ns_garbage.mat"):
        ns.read_fno_mat(path)


# --------------------------------------------------------------------------------------------
# spin-up, fresh trajectories, the resolution check, subnormal flushing


def _small(**overrides):
    base = dict(
        n_trajectories=2,
        resolution=32,
        record_resolution=32,
        viscosity=1e-3,
        dt=None,
        t_final=6.0,
        record_every=1.0,
    )
    return ns.NavierStokesConfig.from_params({**base, **overrides})


def test_spinup_frames_are_the_tail_of_the_unrecorded_run(one_torch_thread):
    full = ns.generate_navier_stokes(_small(), progress=False)
    late = ns.generate_navier_stokes(_small(t_spinup=3.0), progress=False)
    with_first = ns.generate_navier_stokes(
        _small(t_spinup=3.0, include_initial_state=True), progress=False
    )
    assert list(late.time.values) == [4.0, 5.0, 6.0]
    assert list(with_first.time.values) == [3.0, 4.0, 5.0, 6.0]
    np.testing.assert_array_equal(late.fields.values, full.fields.values[:, 3:])
    np.testing.assert_array_equal(with_first.fields.values, full.fields.values[:, 2:])
    with pytest.raises(
        ConfigError,
        match=r"generate\.t_spinup = 6\.0: must be a number >= 0 "
        r"and below t_final",
    ):
        _small(t_spinup=6.0)
    with pytest.raises(ConfigError, match=r"t_spinup = 1\.5: must be a whole multiple"):
        _small(t_spinup=1.5)


def test_first_trajectory_numbers_fresh_trajectories_beyond_a_dataset(one_torch_thread):
    four = ns.generate_navier_stokes(_small(n_trajectories=4), progress=False)
    tail = ns.generate_navier_stokes(_small(n_trajectories=2), progress=False, first_trajectory=2)
    np.testing.assert_allclose(tail.fields.values, four.fields.values[2:], rtol=0, atol=1e-6)
    assert tail.attrs["first_trajectory"] == 2


def test_resolution_check_warns_on_an_under_resolved_grid(one_torch_thread, caplog):
    resolved = ns.generate_navier_stokes(_small(t_final=3.0), progress=False)
    assert resolved.attrs["max_cutoff_enstrophy_share"] < ns.RESOLVED_CUTOFF_SHARE
    assert "resolution check" not in caplog.text
    coarse = ns.generate_navier_stokes(
        _small(viscosity=1e-5, t_final=4.0, on_blowup="drop"), progress=False
    )
    assert coarse.attrs["max_cutoff_enstrophy_share"] > ns.RESOLVED_CUTOFF_SHARE
    assert "resolution check" in caplog.text and "raise resolution" in caplog.text


def test_flushing_tiny_modes_changes_nothing_above_them(one_torch_thread):
    solver = ns.VorticitySolver(32, viscosity=1e-3, dt=1e-2, device="cpu", dtype=torch.float32)
    w0 = ns.sample_initial_vorticity(32, np.arange(2), seed=0, alpha=2.5, tau=7.0, sigma=7.0**1.5)
    state = solver.to_state(w0)
    state[..., -3:, -3:] = 1e-25  # values that would decay into subnormals
    flushed = _flush_tiny(state.clone())
    assert torch.count_nonzero(flushed[..., -3:, -3:]) == 0
    keep = torch.view_as_real(state).abs() >= _TINY
    assert torch.equal(torch.view_as_real(flushed)[keep], torch.view_as_real(state)[keep])
    # a run flushed every 50 steps matches the same run stepped one step at a time, where the
    # flush only ever touches values below 1e-20
    a = solver.advance(solver.to_state(w0), 120)
    b = solver.to_state(w0)
    for _ in range(120):
        b = solver._eager_step(b)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
