"""2-D incompressible Navier-Stokes (vorticity form) on the unit torus: FNO's generator, batched.

Equation (FNO recipe, Li et al. 2021)::

    dw/dt + u . grad(w) = nu lap(w) + f,   u = (psi_y, -psi_x),   -lap(psi) = w,
    f(x, y) = A (sin(2 pi (x + y)) + cos(2 pi (x + y))),   A = 0.1 by default.

Discretisation (the same as FNO's ``ns_2d.py``): Fourier pseudo-spectral on an N x N grid
(x_i = i / N), the nonlinear term evaluated in physical space and dealiased by the 2/3 rule
(|k_x|, |k_y| <= (2/3)(N/2)), Crank-Nicolson on the viscous term and forward Euler on the
advection and the forcing::

    w_h(n+1) = [(1 - a) w_h(n) + dt (f_h - D J_h(n))] / (1 + a),   a = dt nu |2 pi k|^2 / 2

(D: the dealias mask). Everything that does not change from step to step is folded into three
arrays (``c_w = (1-a)/(1+a)``, ``c_nl = dt D/(1+a)``, ``g = dt f_h/(1+a)``) and the four
spectral multipliers giving u, v, w_x, w_y, so one step is one multiply, one batched inverse
FFT of the four fields, two products, one forward FFT and one fused update.

Layout: arrays are (..., y, x); ``x`` is the LAST axis (the rfft axis). FNO's arrays are
(n, x, y, t) (meshgrid 'ij'), so ``read_fno_mat`` transposes them; with that, both sources
describe the same physics (mirroring x and y would flip the sign of the vorticity).

Initial state: FNO's Gaussian random field with covariance sigma^2 (-lap + tau^2)^(-alpha)
(alpha = 2.5, tau = 7, sigma = tau^(alpha - 1)), zero mean. The noise is drawn with NumPy from
a generator seeded by ``(seed, trajectory index)``, so a trajectory does not depend on the
batch size or the device. Complex noise has E|xi|^2 = 1 (each of the real and imaginary parts
has variance 1/2, as torch's complex ``randn`` in FNO's current code); then every Fourier
coefficient of w0 has exactly the variance of the covariance operator. FNO's 2020 code drew
the two parts with variance 1 each, i.e. a field sqrt(2) larger: set ``grf_sigma`` to
``sqrt(2) * 7**1.5`` to reproduce that amplitude.

Recording: frames at t = record_every, 2 record_every, ..., t_final (FNO's convention: its
``u`` starts one time unit after the initial state ``a``); ``include_initial_state`` prepends
t = 0. A coarser record grid is obtained by SPECTRAL TRUNCATION by default (keep
|k| < M/2, drop the coarse Nyquist mode): it is the exact band-limited projection, with no
aliasing of the solve grid's small scales into the recorded spectrum, which matters for a
frequency-aligned study. ``downsample: stride`` (every (N/M)-th point) is cheaper and is what
subsampling the saved fields would give.

Stability guard (two layers):

1. A priori: forward Euler on advection amplifies a Fourier mode by
   |1 - a - i dt 2 pi k.u| / (1 + a) per step, which stays <= 1 iff dt |u|^2 <= 2 nu (for every
   k: both sides scale as k^2), and the phase change per step at the largest dealiased
   wavenumber should stay below one radian. With U the a priori bound on the rms velocity
   (energy inequality: ||u(t)|| <= ||u0|| + t ||F_u||, ||u0|| the GRF's expected rms velocity),
   ``dt`` must satisfy dt <= min(2 nu / U^2, 1 / (2 pi k_max U)) (``stable_dt``). FNO's
   nu = 1e-5, dt = 1e-4 recipe passes (bound ~3e-4); dt = 1e-3, which blew up, is refused.
2. At run time: in 2-D the nonlinear term conserves enstrophy, so ||w(t)||_2 <= ||w0||_2 +
   t ||f||_2 holds exactly for the equation. At every record the solver checks each
   trajectory against ``blowup_tolerance`` times that bound, and for NaN/Inf.
"""

from __future__ import annotations

import logging
import math
import re
import time as _time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

log = logging.getLogger(__name__)

DATASET_NAME = "navier_stokes"
GENERATED_SOURCE = "generated:navier_stokes_pseudospectral"
CHANNELS = ["vorticity"]
RAW_DIR = Path("data/01_raw/navier_stokes")
PARAM_PREFIX = "navier_stokes.source.generate"

_DOWNSAMPLE_METHODS = ("spectral", "stride")
_ON_BLOWUP = ("raise", "drop")
_LAYOUTS = ("half", "packed")
# Safety factor applied to the stability bound when ``dt`` is chosen automatically (then
# rounded down to 1, 2 or 5 x 10^k): FNO's nu = 1e-5 setting gets FNO's dt = 1e-4.
_AUTO_DT_SAFETY = 0.5
# The resolution check: a grid resolves the flow when the outer fifth of its dealiased shells
# holds less than this share of the enstrophy (nu = 1e-4 on 64^2: ~1e-4).
RESOLVED_CUTOFF_SHARE = 1e-3


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NavierStokesConfig:
    """Parameters of the pseudo-spectral vorticity generator (defaults: a laptop-sized run).

    FNO's exact nu = 1e-5 recipe is ``resolution=256, record_resolution=64, viscosity=1e-5,
    dt=1e-4, t_final=20, n_trajectories=1200`` (a GPU job; see benchmarks/gpu_ns_fno_recipe.py).
    """

    n_trajectories: int = 48
    resolution: int = 64  # solve grid N (N x N)
    record_resolution: int = 64  # recorded grid M; N must be a multiple of M
    viscosity: float = 1.0e-3
    dt: float | None = 1.0e-3  # None: the largest step <= stable_dt / 4 dividing record_every
    t_final: float = 30.0
    record_every: float = 1.0
    seed: int = 0
    forcing_amplitude: float = 0.1
    grf_alpha: float = 2.5
    grf_tau: float = 7.0
    grf_sigma: float | None = None  # None: tau ** (alpha - 1), FNO's choice
    include_initial_state: bool = False  # prepend t = 0 to the recorded frames
    # simulated but not recorded: the first frame is at t_spinup + record_every, so a dataset
    # can start once the cascade from the smooth initial field has developed
    t_spinup: float = 0.0
    downsample: str = "spectral"  # spectral | stride
    batch_size: int | None = None  # trajectories solved at once; None: as many as fit memory
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:1 ...
    dtype: str = "float32"  # float32 | float64
    compile: bool = False  # torch.compile the step (worth it on a GPU, slow to start)
    layout: str = "auto"  # half | packed | auto (= half); same results to round-off
    on_blowup: str = "raise"  # raise | drop (drop the blown-up trajectories, listed in attrs)
    blowup_tolerance: float = 1.5  # allowed factor over the enstrophy bound
    dt_limit_factor: float = 1.0  # dt may be this many times the a priori stable_dt

    @classmethod
    def from_dict(
        cls, params: Mapping[str, Any] | None, prefix: str = PARAM_PREFIX
    ) -> NavierStokesConfig:
        """Build from a parameters mapping (YAML); unknown keys are a ``ConfigError``."""
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"{prefix}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        values = {name: _coerce(name, value, f"{prefix}.{name}") for name, value in params.items()}
        return cls(**values).validate(prefix)

    # Derived quantities ------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        if self.grf_sigma is not None:
            return float(self.grf_sigma)
        return float(self.grf_tau ** (0.5 * (2.0 * self.grf_alpha - 2.0)))

    @property
    def n_records(self) -> int:
        return int(round((self.t_final - self.t_spinup) / self.record_every))

    @property
    def spinup_records(self) -> int:
        """Record intervals simulated before the first recorded frame."""
        return int(round(self.t_spinup / self.record_every))

    @property
    def resolved_dt(self) -> float:
        """The step actually used (``dt`` or the automatic choice)."""
        if self.dt is not None:
            return float(self.dt)
        return _nice_dt(_AUTO_DT_SAFETY * stable_dt(self), self.record_every)

    @property
    def steps_per_record(self) -> int:
        return int(round(self.record_every / self.resolved_dt))

    @property
    def record_times(self) -> np.ndarray:
        times = self.t_spinup + self.record_every * np.arange(1, self.n_records + 1,
                                                              dtype=np.float64)
        first = [self.t_spinup] if self.include_initial_state else []
        return np.concatenate([first, times])

    def validate(self, prefix: str = PARAM_PREFIX) -> NavierStokesConfig:
        """Raise ``ConfigError`` naming ``<prefix>.<field>`` for an unusable value."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{prefix}.{name} = {getattr(self, name)!r}: {why}")

        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, "must be a number")
            if not (math.isfinite(value) and value > 0):
                raise bad(name, "must be a finite number > 0")

        for name in ("viscosity", "t_final", "record_every", "grf_alpha", "grf_tau",
                     "blowup_tolerance", "dt_limit_factor"):
            positive(name)
        if self.dt is not None:
            positive("dt")
        if self.grf_sigma is not None:
            positive("grf_sigma")
        if not (isinstance(self.forcing_amplitude, (int, float))
                and math.isfinite(self.forcing_amplitude) and self.forcing_amplitude >= 0):
            raise bad("forcing_amplitude", "must be a finite number >= 0")
        for name in ("n_trajectories", "resolution", "record_resolution"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be an integer >= 1")
        if self.resolution < 8 or self.resolution % 2:
            raise bad("resolution", "must be an even integer >= 8")
        if self.record_resolution % 2 or self.record_resolution < 2:
            raise bad("record_resolution", "must be an even integer >= 2")
        if self.record_resolution > self.resolution or self.resolution % self.record_resolution:
            raise bad(
                "record_resolution",
                f"must divide the solve resolution {self.resolution} "
                "(record on the solve grid or a coarser one)",
            )
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise bad("batch_size", "must be an integer >= 1 or null")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if not _is_multiple(self.t_final, self.record_every):
            raise bad("t_final", f"must be a whole multiple of record_every={self.record_every}")
        if isinstance(self.t_spinup, bool) or not isinstance(self.t_spinup, (int, float)) or not (
                math.isfinite(self.t_spinup) and 0 <= self.t_spinup < self.t_final):
            raise bad("t_spinup", f"must be a number >= 0 and below t_final={self.t_final}")
        if self.t_spinup and not _is_multiple(self.t_spinup, self.record_every):
            raise bad("t_spinup", f"must be a whole multiple of record_every={self.record_every}")
        if self.downsample not in _DOWNSAMPLE_METHODS:
            raise bad("downsample", f"must be one of {list(_DOWNSAMPLE_METHODS)}")
        if self.layout not in (*_LAYOUTS, "auto"):
            raise bad("layout", f"must be one of {[*_LAYOUTS, 'auto']}")
        if self.on_blowup not in _ON_BLOWUP:
            raise bad("on_blowup", f"must be one of {list(_ON_BLOWUP)}")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "must be 'float32' or 'float64'")
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise bad("device", f"is not usable here ({exc})") from None
        if self.dt is not None:
            if self.dt > self.record_every or not _is_multiple(self.record_every, self.dt):
                raise bad(
                    "dt",
                    f"must divide record_every={self.record_every} into a whole number of steps",
                )
            limit = stable_dt(self)
            if self.dt > self.dt_limit_factor * limit:
                raise bad(
                    "dt",
                    f"exceeds the stability bound {limit:.3g} for viscosity={self.viscosity} "
                    f"over t_final={self.t_final} (forward-Euler advection needs "
                    "dt*U^2 <= 2*nu and a phase step < 1 rad at the largest dealiased "
                    f"wavenumber, U = {velocity_bound(self):.3g} the a priori rms velocity "
                    f"bound); use dt <= {limit:.3g} (e.g. {_nice_dt(limit, self.record_every):g}),"
                    " or dt: null to choose it automatically",
                )
        return self


def _is_multiple(total: float, step: float) -> bool:
    ratio = total / step
    return ratio >= 1 - 1e-9 and abs(ratio - round(ratio)) <= 1e-6 * max(1.0, ratio)


def _nice_dt(limit: float, record_every: float) -> float:
    """The largest step <= limit of the form {1, 2, 5} x 10^k dividing record_every."""
    exponent = math.floor(math.log10(limit))
    for _ in range(40):
        for mantissa in (5.0, 2.0, 1.0):
            candidate = mantissa * 10.0**exponent
            if candidate <= limit * (1 + 1e-12) and _is_multiple(record_every, candidate):
                return candidate
        exponent -= 1
    return record_every / math.ceil(record_every / limit - 1e-9)


def _coerce(name: str, value: Any, where: str) -> Any:
    """Convert a YAML value to the field's type (YAML reads 1e-3 without a dot as a string)."""
    default = getattr(NavierStokesConfig, name)
    if name in ("dt", "grf_sigma", "batch_size") and value is None:
        return None
    if isinstance(default, bool) or name in ("include_initial_state", "compile"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: must be true or false")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: must be a string")
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where} = {value!r}: must be a number")
    if isinstance(default, int) or name == "batch_size":
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise ConfigError(f"{where} = {value!r}: must be an integer")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} = {value!r}: must be a number") from None


def _as_config(cfg: NavierStokesConfig | Mapping[str, Any]) -> NavierStokesConfig:
    if isinstance(cfg, NavierStokesConfig):
        return cfg.validate()
    return NavierStokesConfig.from_dict(cfg)


# --------------------------------------------------------------------------------------------
# Wavenumbers, operators, stability bound
# --------------------------------------------------------------------------------------------


def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers (k_y of shape (n, 1), k_x of shape (1, n//2 + 1)) of an rfft2 array.

    k_y runs 0..n/2-1, -n/2..-1 (FFT order); k_x runs 0..n/2 (the rfft half plane).
    """
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]
    kx = np.arange(n // 2 + 1, dtype=np.float64)[None, :]
    return ky, kx


def grid(n: int) -> np.ndarray:
    """Grid positions i / n, i = 0..n-1, on the periodic unit interval."""
    return np.arange(n, dtype=np.float64) / n


def forcing_field(n: int, amplitude: float = 0.1) -> np.ndarray:
    """FNO's forcing A (sin(2 pi (x + y)) + cos(2 pi (x + y))) on the (y, x) grid."""
    y, x = np.meshgrid(grid(n), grid(n), indexing="ij")
    phase = 2.0 * np.pi * (x + y)
    return amplitude * (np.sin(phase) + np.cos(phase))


@dataclass(frozen=True)
class SpectralOperators:
    """Everything a step needs that does not change from step to step (NumPy, float64)."""

    n: int
    derivatives: np.ndarray  # (4, n, n//2+1) complex: multipliers giving u, v, w_x, w_y
    c_w: np.ndarray  # (n, n//2+1) real: (1 - a) / (1 + a)
    c_nl: np.ndarray  # (n, n//2+1) real: dt * dealias / (1 + a)
    forcing_term: np.ndarray  # (n, n//2+1) complex: dt * f_h / (1 + a)
    parseval_weights: np.ndarray  # (n//2+1,): 1 for the DC and Nyquist columns, else 2


def spectral_operators(
    n: int, viscosity: float, dt: float, forcing_amplitude: float = 0.1, *, full: bool = False
) -> SpectralOperators:
    """Step constants on the rfft half plane (``full=False``) or the full (n, n) FFT grid."""
    ky, kx = wavenumbers(n)
    if full:
        kx = np.fft.fftfreq(n, d=1.0 / n)[None, :]
    k2 = kx**2 + ky**2
    lap = 4.0 * np.pi**2 * k2  # -laplacian symbol
    inv_lap = np.divide(1.0, lap, out=np.zeros_like(lap), where=lap > 0)
    # Nyquist modes get no derivative: i k at k = -n/2 has no real (Hermitian) counterpart, and
    # leaving it in makes the inverse rfft implementation-dependent (NumPy, MKL, cuFFT).
    keep = (np.abs(ky) < n / 2) & (np.abs(kx) < n / 2)
    dy = np.where(keep, 2j * np.pi * ky, 0)
    dx = np.where(keep, 2j * np.pi * kx, 0)
    derivatives = np.stack([dy * inv_lap, -dx * inv_lap, dx, dy])  # u = psi_y, v = -psi_x
    k_max = n // 2
    dealias = ((np.abs(ky) <= (2.0 / 3.0) * k_max) & (np.abs(kx) <= (2.0 / 3.0) * k_max))
    half_visc = 0.5 * dt * viscosity * lap
    denom = 1.0 + half_visc
    forcing = forcing_field(n, forcing_amplitude)
    f_h = np.fft.fft2(forcing) if full else np.fft.rfft2(forcing)
    if full:
        weights = np.ones(n)
    else:
        weights = np.full(n // 2 + 1, 2.0)
        weights[0] = weights[-1] = 1.0
    return SpectralOperators(
        n=n,
        derivatives=derivatives,
        c_w=(1.0 - half_visc) / denom,
        c_nl=dt * dealias.astype(np.float64) / denom,
        forcing_term=dt * f_h / denom,
        parseval_weights=weights,
    )


def grf_expected_mean_square(
    n: int, alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None
) -> tuple[float, float]:
    """Expected mean-square vorticity and velocity of the GRF initial state on an n-grid."""
    sigma = tau ** (alpha - 1.0) if sigma is None else sigma
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]
    kx = np.fft.fftfreq(n, d=1.0 / n)[None, :]
    lap = 4.0 * np.pi**2 * (kx**2 + ky**2)
    eig = sigma**2 * (lap + tau**2) ** (-alpha)
    eig[0, 0] = 0.0
    lap[0, 0] = 1.0
    return float(eig.sum()), float((eig / lap).sum())


def velocity_bound(cfg: NavierStokesConfig) -> float:
    """A priori bound on the rms velocity up to ``t_final``: ||u0|| + t_final ||F_u||.

    ||u0|| is the GRF's expected rms velocity; F_u is the velocity forcing whose curl is f
    (wavenumber (1, 1), so ||F_u|| = A / (2 pi sqrt 2)).
    """
    _, u0_ms = grf_expected_mean_square(cfg.resolution, cfg.grf_alpha, cfg.grf_tau, cfg.sigma)
    forcing_rms = cfg.forcing_amplitude / (2.0 * math.pi * math.sqrt(2.0))
    return math.sqrt(u0_ms) + cfg.t_final * forcing_rms


def stable_dt(cfg: NavierStokesConfig) -> float:
    """A priori largest stable step: min(2 nu / U^2, 1 / (2 pi k_max U)); see the module doc."""
    speed = max(velocity_bound(cfg), 1e-12)
    k_max = math.sqrt(2.0) * (2.0 / 3.0) * (cfg.resolution // 2)
    return min(2.0 * cfg.viscosity / speed**2, 1.0 / (2.0 * math.pi * k_max * speed))


# --------------------------------------------------------------------------------------------
# Initial state: Gaussian random field
# --------------------------------------------------------------------------------------------


def grf_sqrt_eigenvalues(n: int, alpha: float, tau: float, sigma: float) -> np.ndarray:
    """FNO's GRF scaling on the full (n, n) FFT grid: n^2 sqrt2 sigma (|2 pi k|^2 + tau^2)^(-a/2).

    With complex unit noise (E|xi|^2 = 1), Re(ifft2(sqrt_eig * xi)) has E|w_h(k)|^2 =
    n^4 sigma^2 (|2 pi k|^2 + tau^2)^(-alpha) for every k != 0 (the sqrt 2 makes up for taking
    the real part), i.e. the covariance sigma^2 (-lap + tau^2)^(-alpha).
    """
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None]
    kx = np.fft.fftfreq(n, d=1.0 / n)[None, :]
    sqrt_eig = (n**2) * math.sqrt(2.0) * sigma * (
        4.0 * np.pi**2 * (kx**2 + ky**2) + tau**2
    ) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def grf_noise(seed: int, trajectory: int, n: int) -> np.ndarray:
    """Complex unit noise (real and imaginary parts of variance 1/2) for one trajectory."""
    rng = np.random.default_rng([int(seed), int(trajectory)])
    parts = rng.standard_normal((2, n, n))
    return (parts[0] + 1j * parts[1]) / math.sqrt(2.0)


def sample_initial_vorticity(
    n: int,
    trajectories: np.ndarray | list[int],
    *,
    seed: int,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
) -> np.ndarray:
    """GRF initial vorticity, shape (len(trajectories), n, n), float64, zero mean."""
    sigma = tau ** (alpha - 1.0) if sigma is None else sigma
    sqrt_eig = grf_sqrt_eigenvalues(n, alpha, tau, sigma)
    noise = np.stack([grf_noise(seed, int(i), n) for i in trajectories])
    return np.fft.ifft2(sqrt_eig * noise).real


# --------------------------------------------------------------------------------------------
# Plain NumPy reference, one trajectory at a time
# --------------------------------------------------------------------------------------------


def _downsample_numpy(w_h: np.ndarray, n: int, m: int, method: str) -> np.ndarray:
    if m == n:
        return np.fft.irfft2(w_h, s=(n, n))
    if method == "stride":
        step = n // m
        return np.fft.irfft2(w_h, s=(n, n))[::step, ::step]
    coarse = np.zeros((m, m // 2 + 1), dtype=w_h.dtype)
    half = m // 2
    coarse[:half, :half] = w_h[:half, :half]
    coarse[half + 1:, :half] = w_h[n - half + 1:, :half]
    return np.fft.irfft2(coarse, s=(m, m)) * (m / n) ** 2


def simulate_vorticity_numpy(
    w0: np.ndarray,
    *,
    viscosity: float,
    dt: float,
    n_records: int,
    steps_per_record: int,
    forcing_amplitude: float = 0.1,
    record_resolution: int | None = None,
    downsample: str = "spectral",
) -> np.ndarray:
    """The same scheme in plain NumPy for ONE trajectory: w0 (n, n) -> records (n_records, m, m).

    The reference for the batched torch solver (tests) and the baseline of the benchmark.
    """
    n = w0.shape[-1]
    m = record_resolution or n
    ops = spectral_operators(n, viscosity, dt, forcing_amplitude)
    w_h = np.fft.rfft2(w0)
    out = np.empty((n_records, m, m))
    for r in range(n_records):
        for _ in range(steps_per_record):
            grads = np.fft.irfft2(w_h[None] * ops.derivatives, s=(n, n))
            nonlinear = grads[0] * grads[2] + grads[1] * grads[3]
            w_h = ops.c_w * w_h - ops.c_nl * np.fft.rfft2(nonlinear) + ops.forcing_term
        out[r] = _downsample_numpy(w_h, n, m, downsample)
    return out


# --------------------------------------------------------------------------------------------
# Batched torch solver
# --------------------------------------------------------------------------------------------


def _half_step_functional(
    w_h: torch.Tensor,
    derivatives_imag: torch.Tensor,
    c_w: torch.Tensor,
    c_nl: torch.Tensor,
    forcing_term_real: torch.Tensor,
) -> torch.Tensor:
    """One step on the rfft half plane without side effects: the form torch.compile fuses.

    Inductor does not generate code for complex arithmetic, so the elementwise work is written
    on real views: the four derivative multipliers are purely imaginary (i d), and
    i d (a + i b) = -d b + i d a; the update multiplies by real arrays.
    """
    n = w_h.shape[-2]
    parts = torch.view_as_real(w_h).unsqueeze(1)  # (batch, 1, n, n//2+1, 2)
    spec = torch.stack(
        (-derivatives_imag * parts[..., 1], derivatives_imag * parts[..., 0]), dim=-1
    )
    grads = torch.fft.irfft2(torch.view_as_complex(spec), s=(n, n))
    nonlinear = grads[:, 0] * grads[:, 2] + grads[:, 1] * grads[:, 3]
    nonlinear_parts = torch.view_as_real(torch.fft.rfft2(nonlinear))
    updated = (
        c_w.unsqueeze(-1) * torch.view_as_real(w_h)
        - c_nl.unsqueeze(-1) * nonlinear_parts
        + forcing_term_real
    )
    return torch.view_as_complex(updated)


def _packed_step_functional(
    w_full: torch.Tensor,
    multipliers: torch.Tensor,
    c_w: torch.Tensor,
    c_nl: torch.Tensor,
    forcing_term: torch.Tensor,
) -> torch.Tensor:
    """One step on the full spectrum, two real fields packed per complex inverse FFT.

    z0 = u + i v and z1 = w_x + i w_y come from two complex inverse FFTs (instead of four
    real ones), and u w_x + v w_y = Re(conj(z0) z1).
    """
    z = torch.fft.ifft2(w_full.unsqueeze(1) * multipliers)
    nonlinear = (z[:, 0].conj() * z[:, 1]).real
    return c_w * w_full - c_nl * torch.fft.fft2(nonlinear) + forcing_term


_COMPILED_STEPS: dict[str, Any] = {}


# Modes the dealiased nonlinear term never feeds (|k| beyond 2/3 of the grid's Nyquist) only
# decay, by the viscous factor each step, until they are subnormal floats (below ~1e-38 in
# float32). Every FFT that touches a subnormal runs the CPU's slow path: at nu = 1e-4 on a 128^2
# grid a step became 10-15x slower after ~15 time units on 2 threads (measured; flushing
# subnormals with torch.set_flush_denormal covers the calling thread only, not the FFT's worker
# threads). So modes below _TINY are set to exactly zero every _FLUSH_EVERY steps: a mode at or
# above _TINY cannot decay to 1e-38 within that many steps (the fastest viscous decay on the
# finest grids here is a few percent per step), and a mode of 1e-20 is zero next to fields of
# order one (float32 resolves 1e-7 of them).
_TINY = 1e-20
_FLUSH_EVERY = 50


def _flush_tiny(state: torch.Tensor) -> torch.Tensor:
    parts = torch.view_as_real(state) if state.is_complex() else state
    parts.masked_fill_(parts.abs() < _TINY, 0.0)
    return state


def _compiled_step(layout: str) -> Any:
    # One compiled function per layout for every solver: all arrays are arguments, so dynamo
    # guards only on shapes and dtypes and the compiled kernels are reused across batches.
    if layout not in _COMPILED_STEPS:
        fn = _packed_step_functional if layout == "packed" else _half_step_functional
        _COMPILED_STEPS[layout] = torch.compile(fn, dynamic=False)
    return _COMPILED_STEPS[layout]


@dataclass
class RunDiagnostics:
    """What a run measured: per trajectory blow-up flags and the worst numbers seen."""

    blown_up: np.ndarray  # (batch,) bool
    blowup_time: np.ndarray  # (batch,) float, NaN where sane
    max_rms_ratio: float  # max over records of rms(w) / (rms(w0) + t rms(f))
    max_speed: float  # max |u| over all records
    # max over records of the enstrophy share in the outer fifth of the dealiased shells
    max_cutoff_share: float = 0.0


class VorticitySolver:
    """Batched pseudo-spectral solver (torch, CPU or CUDA) for a batch of trajectories at once.

    ``layout`` picks the state: ``half`` keeps the rfft half plane (four real inverse FFTs a
    step); ``packed`` keeps the full spectrum and packs two real fields into each complex
    inverse FFT (two complex inverse FFTs a step), which can be faster where the library's
    complex-to-real transform is slow. ``auto`` = half (measured no worse on CPU here, and its
    compiled form is fully fused). Both compute the same scheme to round-off.
    """

    def __init__(
        self,
        n: int,
        *,
        viscosity: float,
        dt: float,
        forcing_amplitude: float = 0.1,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        compile: bool = False,
        layout: str = "auto",
    ) -> None:
        self.n, self.viscosity, self.dt = int(n), float(viscosity), float(dt)
        self.forcing_amplitude = float(forcing_amplitude)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.compile = compile
        if layout == "auto":
            layout = "half"
        if layout not in _LAYOUTS:
            raise ConfigError(f"layout = {layout!r}: must be one of {list(_LAYOUTS)} or 'auto'")
        self.layout = layout
        half = spectral_operators(self.n, self.viscosity, self.dt, self.forcing_amplitude)
        ops = half if layout == "half" else spectral_operators(
            self.n, self.viscosity, self.dt, self.forcing_amplitude, full=True
        )

        def real(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=self.dtype, device=self.device).contiguous()

        def cplx(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=self.cdtype, device=self.device).contiguous()

        # Half-plane derivatives serve the diagnostics (speed, nonlinear term) in both layouts.
        self.half_derivatives = cplx(half.derivatives)
        if layout == "half":
            self.multipliers = self.half_derivatives
        else:
            d = ops.derivatives
            self.multipliers = cplx(np.stack([d[0] + 1j * d[1], d[2] + 1j * d[3]]))
        self.c_w, self.c_nl = real(ops.c_w), real(ops.c_nl)
        self._derivatives_imag = real(half.derivatives.imag)  # all four are purely imaginary
        # Complex copies for the in-place eager update (addcmul_ wants matching dtypes).
        self._c_w_c, self._neg_c_nl_c = cplx(ops.c_w), cplx(-ops.c_nl)
        self.forcing_term = cplx(ops.forcing_term)
        self.parseval_weights = real(ops.parseval_weights)
        self._half_parseval_weights = real(half.parseval_weights)
        self.forcing_rms = float(np.sqrt(np.mean(forcing_field(self.n, forcing_amplitude) ** 2)))
        self._buffers: dict[int, tuple[torch.Tensor, ...]] = {}
        self._cutoff_mask: torch.Tensor | None = None

    # -- state conversion --------------------------------------------------------------------

    def to_state(self, w: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Physical vorticity (batch, n, n) -> solver state (spectral, layout-dependent)."""
        w = torch.as_tensor(w, dtype=self.dtype, device=self.device)
        state = torch.fft.fft2(w) if self.layout == "packed" else torch.fft.rfft2(w)
        return state.contiguous()

    def half_plane(self, state: torch.Tensor) -> torch.Tensor:
        """The rfft half plane of the state (a view in the packed layout)."""
        return state[..., : self.n // 2 + 1] if self.layout == "packed" else state

    def to_physical(self, state: torch.Tensor, m: int | None = None,
                    method: str = "spectral") -> torch.Tensor:
        """Vorticity on an m x m grid from the state (see ``_downsample_numpy``)."""
        w_h = self.half_plane(state)
        n = self.n
        m = m or n
        if m == n:
            return torch.fft.irfft2(w_h, s=(n, n))
        if method == "stride":
            step = n // m
            return torch.fft.irfft2(w_h, s=(n, n))[..., ::step, ::step]
        half = m // 2
        coarse = w_h.new_zeros((*w_h.shape[:-2], m, half + 1))
        coarse[..., :half, :half] = w_h[..., :half, :half]
        coarse[..., half + 1:, :half] = w_h[..., n - half + 1:, :half]
        return torch.fft.irfft2(coarse, s=(m, m)) * (m / n) ** 2

    def rms(self, state: torch.Tensor) -> torch.Tensor:
        """Root-mean-square vorticity per trajectory (Parseval)."""
        power = (state.real**2 + state.imag**2) * self.parseval_weights
        return torch.sqrt(power.sum(dim=(-2, -1))) / self.n**2

    def _half_fields(self, state: torch.Tensor, which: slice) -> torch.Tensor:
        w_h = self.half_plane(state)
        return torch.fft.irfft2(w_h.unsqueeze(-3) * self.half_derivatives[which],
                                s=(self.n, self.n))

    def cutoff_share(self, state: torch.Tensor) -> torch.Tensor:
        """Per trajectory, the share of the enstrophy in the outer fifth of the dealiased
        shells (0.8 k_d < |k| <= k_d, k_d = n/3): the resolution check. A resolved flow has
        next to nothing there; a pile-up near the cutoff means the grid is too coarse."""
        w_h = self.half_plane(state)
        if self._cutoff_mask is None:
            ky, kx = wavenumbers(self.n)
            kmag = np.sqrt(kx**2 + ky**2)
            k_d = self.n / 3.0
            self._cutoff_mask = torch.as_tensor((kmag > 0.8 * k_d) & (kmag <= k_d),
                                                device=self.device)
        power = (w_h.real**2 + w_h.imag**2) * self._half_parseval_weights
        total = power.sum(dim=(-2, -1)).clamp_min(torch.finfo(power.dtype).tiny)
        return (power * self._cutoff_mask).sum(dim=(-2, -1)) / total

    def max_speed(self, state: torch.Tensor) -> torch.Tensor:
        uv = self._half_fields(state, slice(0, 2))
        return torch.sqrt(uv[..., 0, :, :] ** 2 + uv[..., 1, :, :] ** 2).amax(dim=(-2, -1))

    def velocity(self, state: torch.Tensor) -> torch.Tensor:
        """(u, v) = (psi_y, -psi_x) on the grid, shape (..., 2, n, n)."""
        return self._half_fields(state, slice(0, 2))

    def nonlinear_term(self, state: torch.Tensor) -> torch.Tensor:
        """u . grad(w) on the grid (before dealiasing), for checks."""
        g = self._half_fields(state, slice(0, 4))
        return g[..., 0, :, :] * g[..., 2, :, :] + g[..., 1, :, :] * g[..., 3, :, :]

    # -- stepping ----------------------------------------------------------------------------

    def _eager_step(self, state: torch.Tensor) -> torch.Tensor:
        """One step in place, reusing per-batch-size buffers (no allocation per step)."""
        batch, n = state.shape[0], self.n
        bufs = self._buffers.get(batch)
        n_fields, width = (2, n) if self.layout == "packed" else (4, n // 2 + 1)
        if bufs is None:
            kw = dict(device=self.device)
            bufs = (
                torch.empty((batch, n_fields, n, width), dtype=self.cdtype, **kw),
                torch.empty((batch, n_fields, n, n),
                            dtype=self.cdtype if self.layout == "packed" else self.dtype, **kw),
                torch.empty((batch, n, n), dtype=self.dtype, **kw),
                torch.empty((batch, n, width), dtype=self.cdtype, **kw),
            )
            self._buffers[batch] = bufs
        spec, phys, nonlinear, nonlinear_h = bufs
        torch.mul(state.unsqueeze(1), self.multipliers, out=spec)
        if self.layout == "packed":
            torch.fft.ifft2(spec, out=phys)
            parts = torch.view_as_real(phys)  # (..., 2): re, im of z0 = u + iv, z1 = w_x + iw_y
            torch.mul(parts[:, 0, ..., 0], parts[:, 1, ..., 0], out=nonlinear)
            nonlinear.addcmul_(parts[:, 0, ..., 1], parts[:, 1, ..., 1])
            torch.fft.fft2(nonlinear, out=nonlinear_h)
        else:
            torch.fft.irfft2(spec, s=(n, n), out=phys)
            torch.mul(phys[:, 0], phys[:, 2], out=nonlinear)
            nonlinear.addcmul_(phys[:, 1], phys[:, 3])
            torch.fft.rfft2(nonlinear, out=nonlinear_h)
        state.mul_(self._c_w_c).addcmul_(nonlinear_h, self._neg_c_nl_c).add_(self.forcing_term)
        return state

    def advance(self, state: torch.Tensor, n_steps: int) -> torch.Tensor:
        """Take ``n_steps`` steps; returns the new state (the input may be updated in place)."""
        if self.compile:
            step = _compiled_step(self.layout)
            if self.layout == "half":
                args = (self._derivatives_imag, self.c_w, self.c_nl,
                        torch.view_as_real(self.forcing_term))
            else:
                args = (self.multipliers, self.c_w, self.c_nl, self.forcing_term)
            for _ in range(n_steps):
                state = step(state, *args)
            return state
        for step in range(n_steps):
            state = self._eager_step(state)
            if step % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                _flush_tiny(state)
        return _flush_tiny(state)

    def simulate(
        self,
        w0: torch.Tensor | np.ndarray,
        *,
        n_records: int,
        steps_per_record: int,
        record_resolution: int | None = None,
        downsample: str = "spectral",
        include_initial_state: bool = False,
        blowup_tolerance: float = 1.5,
        progress: Any = None,
        spinup_records: int = 0,
    ) -> tuple[torch.Tensor, RunDiagnostics]:
        """Run a batch: w0 (batch, n, n) -> records (batch, n_frames, m, m) on the device.

        A trajectory that turns non-finite or exceeds ``blowup_tolerance`` times the enstrophy
        bound is flagged and frozen at zero (so it cannot poison shared reductions); the
        caller decides what to do with it. ``progress`` is an optional tqdm-like object.
        ``spinup_records`` record intervals are simulated (and checked) first without being
        recorded; the initial state, when included, is then the state at their end.
        """
        m = record_resolution or self.n
        w_h = self.to_state(w0)
        batch = w_h.shape[0]
        rms0 = self.rms(w_h)
        n_frames = n_records + int(include_initial_state)
        records = torch.empty((batch, n_frames, m, m), dtype=self.dtype, device=self.device)
        frame = 0
        if include_initial_state and spinup_records == 0:
            records[:, 0] = self.to_physical(w_h, m, downsample)
            frame = 1
        blown = torch.zeros(batch, dtype=torch.bool, device=self.device)
        blowup_time = torch.full((batch,), float("nan"), dtype=torch.float64)
        max_ratio, max_speed, max_cutoff = 0.0, 0.0, 0.0
        chunk = max(1, min(steps_per_record, 200))
        for r in range(spinup_records + n_records):
            done = 0
            while done < steps_per_record:
                k = min(chunk, steps_per_record - done)
                w_h = self.advance(w_h, k)
                done += k
                if progress is not None:
                    progress.update(k)
            t = (r + 1) * steps_per_record * self.dt
            bound = rms0 + t * self.forcing_rms
            ratio = self.rms(w_h) / torch.clamp(bound, min=torch.finfo(self.dtype).tiny)
            bad = ~torch.isfinite(ratio) | (ratio > blowup_tolerance)
            new_bad = bad & ~blown
            if bool(new_bad.any()):
                blowup_time[new_bad.cpu()] = t
                blown |= new_bad
            if bool(blown.any()):
                # Zeroed each record, so a NaN trajectory cannot spoil the batch's reductions;
                # its frames from the blow-up on are NaN.
                w_h[blown] = 0
            sane = ~blown
            if bool(sane.any()):
                max_ratio = max(max_ratio, float(ratio[sane].max()))
                max_speed = max(max_speed, float(self.max_speed(w_h[sane]).max()))
                max_cutoff = max(max_cutoff, float(self.cutoff_share(w_h[sane]).max()))
            if r + 1 < spinup_records or (r + 1 == spinup_records
                                          and not include_initial_state):
                continue
            records[:, frame] = self.to_physical(w_h, m, downsample)
            records[blown, frame] = float("nan")
            frame += 1
        diagnostics = RunDiagnostics(
            blown_up=blown.cpu().numpy(),
            blowup_time=blowup_time.numpy(),
            max_rms_ratio=max_ratio,
            max_speed=max_speed,
            max_cutoff_share=max_cutoff,
        )
        return records, diagnostics


# --------------------------------------------------------------------------------------------
# The generator: config -> raw dataset
# --------------------------------------------------------------------------------------------


def _default_batch_size(cfg: NavierStokesConfig, device: torch.device) -> int:
    # About 12 solve-grid arrays per trajectory are alive during a step (state, 4 spectral and
    # 4 physical derivative fields, products, temporaries of the record transforms).
    itemsize = 4 if cfg.dtype == "float32" else 8
    per_traj = 12 * cfg.resolution**2 * itemsize
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(cfg.n_trajectories, 0.5 * free // per_traj)))
    # CPU: per-trajectory speed is best while a batch's working set stays near the cache size
    # (measured: 16 beat 48 at 64^2); batching still amortises the per-op overhead (at 128^2,
    # 8 trajectories a batch took half the time per trajectory-step of 5).
    return int(max(1, min(cfg.n_trajectories, max(8, min(32, (4 << 20) // per_traj)))))


def generate_navier_stokes(
    cfg: NavierStokesConfig | Mapping[str, Any], progress: bool = True, *,
    first_trajectory: int = 0,
) -> xr.Dataset:
    """Generate forced 2-D turbulence trajectories (FNO's recipe) as a raw dataset.

    ``first_trajectory`` numbers the trajectories from there: trajectory ``i``'s initial state
    depends on ``(seed, i)`` only, so ``first_trajectory=n`` gives trajectories that a dataset
    of ``n`` trajectories does not hold (function matching's fresh inputs).

    Returns ``fields`` (trajectory, time, channel=["vorticity"], y, x) at the record times
    (see ``NavierStokesConfig.record_times``) on the grid i / record_resolution, with every
    solver parameter in the attributes.
    """
    cfg = _as_config(cfg)
    from tqdm.auto import tqdm  # lazy: tqdm is only needed here

    device = resolve_device(cfg.device)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    dt = cfg.resolved_dt
    batch_size = cfg.batch_size or _default_batch_size(cfg, device)
    solver = VorticitySolver(
        cfg.resolution, viscosity=cfg.viscosity, dt=dt, forcing_amplitude=cfg.forcing_amplitude,
        device=device, dtype=dtype, compile=cfg.compile, layout=cfg.layout,
    )
    n_frames = cfg.n_records + int(cfg.include_initial_state)
    m = cfg.record_resolution
    fields_out = np.empty((cfg.n_trajectories, n_frames, 1, m, m), dtype=np.float32)
    blown_all = np.zeros(cfg.n_trajectories, dtype=bool)
    max_ratio, max_speed, max_cutoff = 0.0, 0.0, 0.0
    n_steps = (cfg.spinup_records + cfg.n_records) * cfg.steps_per_record
    started = _time.perf_counter()
    bar = tqdm(
        total=n_steps * cfg.n_trajectories, unit="traj-step", unit_scale=True,
        desc=f"navier_stokes {cfg.resolution}^2 on {device.type}", disable=not progress,
    )
    try:
        for start in range(0, cfg.n_trajectories, batch_size):
            idx = np.arange(start, min(start + batch_size, cfg.n_trajectories))
            w0 = sample_initial_vorticity(
                cfg.resolution, idx + int(first_trajectory), seed=cfg.seed, alpha=cfg.grf_alpha,
                tau=cfg.grf_tau,
                sigma=cfg.sigma,
            )
            scaled_bar = _ScaledProgress(bar, len(idx)) if progress else None
            records, diag = solver.simulate(
                w0, n_records=cfg.n_records, steps_per_record=cfg.steps_per_record,
                record_resolution=m, downsample=cfg.downsample,
                include_initial_state=cfg.include_initial_state,
                spinup_records=cfg.spinup_records,
                blowup_tolerance=cfg.blowup_tolerance, progress=scaled_bar,
            )
            if diag.blown_up.any() and cfg.on_blowup == "raise":
                first = int(np.flatnonzero(diag.blown_up)[0])
                raise ConfigError(
                    f"{PARAM_PREFIX}.dt = {dt:g}: trajectory {int(idx[first])} blew up at "
                    f"t = {diag.blowup_time[first]:g} (vorticity non-finite or its rms above "
                    f"{cfg.blowup_tolerance} x the enstrophy bound ||w0|| + t ||f||) with "
                    f"viscosity={cfg.viscosity}, resolution={cfg.resolution}; reduce dt (a priori "
                    f"bound {stable_dt(cfg):.3g}), or set on_blowup: drop to discard such "
                    "trajectories"
                )
            fields_out[idx, :, 0] = records.to("cpu", torch.float32).numpy()
            blown_all[idx] = diag.blown_up
            max_ratio = max(max_ratio, diag.max_rms_ratio)
            max_speed = max(max_speed, diag.max_speed)
            max_cutoff = max(max_cutoff, diag.max_cutoff_share)
    finally:
        bar.close()
    elapsed = _time.perf_counter() - started
    if max_cutoff > RESOLVED_CUTOFF_SHARE:
        log.warning(
            "%s: resolution check: up to %.2g of the enstrophy lies in the outer fifth of the "
            "dealiased shells of the %d^2 grid (resolved flows hold < %g there); the grid "
            "may not resolve viscosity=%g: raise resolution", PARAM_PREFIX, max_cutoff,
            cfg.resolution, RESOLVED_CUTOFF_SHARE, cfg.viscosity)
    kept = np.flatnonzero(~blown_all)
    if kept.size == 0:
        raise ConfigError(
            f"{PARAM_PREFIX}.dt = {dt:g}: every trajectory blew up; reduce dt "
            f"(a priori bound {stable_dt(cfg):.3g})"
        )
    # Attributes must be plain str/int/float for every store format (no None, no bool).
    attrs = {
        key: "null" if value is None else int(value) if isinstance(value, bool) else value
        for key, value in asdict(cfg).items()
    }
    attrs.update(
        {
            "dt_used": dt,
            "steps_per_record": cfg.steps_per_record,
            "grf_sigma_used": cfg.sigma,
            "stable_dt_bound": stable_dt(cfg),
            "velocity_bound": velocity_bound(cfg),
            "max_speed": max_speed,
            "max_stability_number": dt * max_speed**2 / (2.0 * cfg.viscosity),
            "max_enstrophy_bound_ratio": max_ratio,
            "max_cutoff_enstrophy_share": max_cutoff,
            "dropped_trajectories": ",".join(str(i) for i in np.flatnonzero(blown_all)) or "none",
            "equation": "dw/dt + u.grad(w) = nu lap(w) + f, f = A(sin 2pi(x+y) + cos 2pi(x+y))",
            "scheme": "pseudo-spectral, 2/3 dealiasing, Crank-Nicolson viscous, forward-Euler "
                      "advection and forcing (FNO ns_2d)",
            "initial_state": "GRF sigma^2 (-lap + tau^2)^-alpha, zero mean",
            "device_used": str(device),
            "layout_used": solver.layout,
            "batch_size_used": batch_size,
            "generation_seconds": elapsed,
            "first_trajectory": int(first_trajectory),
        }
    )
    return make_raw(
        fields_out[kept],
        dataset=DATASET_NAME,
        source=GENERATED_SOURCE,
        channels=CHANNELS,
        time=cfg.record_times,
        y=grid(m),
        x=grid(m),
        attrs=attrs,
    )


class _ScaledProgress:
    """Counts trajectory-steps on a shared bar: one solver step advances ``batch`` of them."""

    def __init__(self, bar: Any, batch: int) -> None:
        self.bar, self.batch = bar, batch

    def update(self, steps: int) -> None:
        self.bar.update(steps * self.batch)


# --------------------------------------------------------------------------------------------
# FNO's published .mat files
# --------------------------------------------------------------------------------------------

_VISCOSITY_IN_NAME = re.compile(r"V(\d+(?:\.\d+)?e-?\d+)", re.IGNORECASE)


def read_fno_mat(
    path: str | Path,
    viscosity: float | None = None,
    *,
    include_initial_state: bool = False,
    max_trajectories: int | None = None,
) -> xr.Dataset:
    """Read an FNO Navier-Stokes ``.mat`` file into the raw contract.

    Two layouts: scipy-readable MATLAB v5 (``NavierStokes_V1e-5_N1200_T20.mat``: ``a`` (N, 64,
    64), ``u`` (N, 64, 64, T), optional ``t``) and MATLAB v7.3 = HDF5 (``ns_V1e-3_N5000_T50.mat``,
    read with h5py; MATLAB stores column-major, so the axes come reversed). FNO's arrays are
    (n, x, y, t); they are transposed to (trajectory, time, channel, y, x). Times are ``t`` if
    the file has it, else 1..T (FNO records after every time unit). ``viscosity`` defaults to
    the value in the file name (``V1e-5``). ``include_initial_state`` prepends ``a`` at t = 0.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingRawDataError(
            f"{path}: FNO Navier-Stokes file not found. Put FNO's .mat file (e.g. "
            f"NavierStokes_V1e-5_N1200_T20.mat or ns_V1e-3_N5000_T50.mat) in {RAW_DIR}/ and "
            "point navier_stokes.source.fno_mat.path at it, or use "
            "navier_stokes.source.kind: generate, which needs no file"
        )
    if max_trajectories is not None and max_trajectories < 1:
        raise ConfigError(f"max_trajectories = {max_trajectories!r}: must be >= 1 or None")
    import h5py  # lazy: only the v7.3 layout needs it

    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError:
        is_hdf5 = False
    if is_hdf5:
        arrays, layout = _read_mat_v73(path, max_trajectories), "matlab_v7.3_hdf5"
    else:
        arrays, layout = _read_mat_v5(path, max_trajectories), "matlab_v5_scipy"
    u = arrays["u"]
    if u.ndim != 4:
        raise DataError(
            f"{path}: 'u' has {u.ndim} dims {tuple(u.shape)}; expected 4, (trajectory, x, y, "
            "time) as in FNO's files"
        )
    n_traj, nx, ny, nt = u.shape
    _check_finite(u, "u", path)
    fields_ = np.transpose(u, (0, 3, 2, 1))[:, :, None]  # (n, t, 1, y, x)
    if "t" in arrays and arrays["t"].size == nt:
        times = np.asarray(arrays["t"], dtype=np.float64).reshape(-1)
    else:
        times = np.arange(1, nt + 1, dtype=np.float64)
    if include_initial_state:
        a = arrays.get("a")
        if a is None:
            raise DataError(f"{path}: include_initial_state needs the variable 'a', not found")
        if a.shape != (n_traj, nx, ny):
            raise DataError(
                f"{path}: 'a' has shape {tuple(a.shape)}, expected {(n_traj, nx, ny)} to match 'u'"
            )
        _check_finite(a, "a", path)
        fields_ = np.concatenate([np.transpose(a, (0, 2, 1))[:, None, None], fields_], axis=1)
        times = np.concatenate([[0.0], times])
    if viscosity is None:
        match = _VISCOSITY_IN_NAME.search(path.name)
        viscosity = float(match.group(1)) if match else None
    attrs = {
        "file": str(path),
        "layout": layout,
        "viscosity": "unknown" if viscosity is None else float(viscosity),
        "include_initial_state": int(include_initial_state),
        "axes_in_file": "(n, x, y, t) after reversing MATLAB v7.3 axes" if is_hdf5
        else "(n, x, y, t)",
    }
    return make_raw(
        fields_.astype(np.float32, copy=False),
        dataset=DATASET_NAME,
        source=str(path),
        channels=CHANNELS,
        time=times,
        y=grid(ny),
        x=grid(nx),
        attrs=attrs,
    )


def _check_finite(array: np.ndarray, name: str, path: Path) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {int(bad.sum())} NaN/Inf value(s) in '{name}' (first at index {first})"
        )


def _read_mat_v5(path: Path, max_trajectories: int | None) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError...
        raise DataError(
            f"{path}: not a readable MATLAB file (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    names = sorted(k for k in contents if not k.startswith("__"))
    if "u" not in contents:
        raise DataError(f"{path}: no variable 'u' (found {names}); expected FNO's (N,64,64,T) 'u'")
    arrays = {k: np.asarray(contents[k]) for k in ("u", "a", "t") if k in contents}
    if max_trajectories is not None:
        for key in ("u", "a"):
            if key in arrays and arrays[key].ndim >= 1:
                arrays[key] = arrays[key][:max_trajectories]
    return arrays


def _read_mat_v73(path: Path, max_trajectories: int | None) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            names = sorted(f.keys())
            if "u" not in f or not isinstance(f["u"], h5py.Dataset):
                raise DataError(
                    f"{path}: no variable 'u' (found {names}); expected FNO's 'u' stored as "
                    "(T, 64, 64, N) in MATLAB v7.3"
                )
            arrays = {}
            for key in ("u", "a", "t"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    continue
                dset = f[key]
                # MATLAB writes column-major: the trajectory axis is the LAST one on disk, so a
                # subset is a slice of it, read before reversing the axes.
                if max_trajectories is not None and key in ("u", "a") and dset.ndim >= 2:
                    data = dset[..., :max_trajectories]
                else:
                    data = dset[()]
                arrays[key] = np.transpose(np.asarray(data))
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError/RuntimeError on damaged files
        raise DataError(
            f"{path}: not a readable MATLAB v7.3 (HDF5) file (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return arrays


__all__ = [
    "NavierStokesConfig",
    "RunDiagnostics",
    "SpectralOperators",
    "VorticitySolver",
    "forcing_field",
    "generate_navier_stokes",
    "grf_expected_mean_square",
    "grf_sqrt_eigenvalues",
    "read_fno_mat",
    "resolve_device",
    "sample_initial_vorticity",
    "simulate_vorticity_numpy",
    "spectral_operators",
    "stable_dt",
    "velocity_bound",
    "wavenumbers",
]
