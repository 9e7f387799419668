"""Navier-Stokes generator configuration: ``NavierStokesConfig`` and the a priori step bound.

``NavierStokesConfig.from_params`` reads the ``navier_stokes.source.generate`` parameters with
the one config loader (``config_utils.from_params``: an unknown key or an unusable value is a
``ConfigError`` naming ``<param_path>.<field>``);
``stable_dt`` and ``velocity_bound`` give the largest stable step, which ``validate`` enforces
and an automatic ``dt`` is chosen from.

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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdkd_pipeline.config_utils import check_fields, from_params, param
from sdkd_pipeline.data.sources.navier_stokes.spectral import grf_expected_mean_square
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

DATASET_NAME = "navier_stokes"
GENERATED_SOURCE = "generated:navier_stokes_pseudospectral"
CHANNELS = ["vorticity"]
# CF metadata of the channel (data/cf.py): the solver and FNO's files are nondimensional (unit
# torus, nu = 1/Re), so the vorticity is too.
CHANNEL_LONG_NAMES = ["vorticity (nondimensional)"]
CHANNEL_UNITS = ["1"]
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


@dataclass(frozen=True)
class NavierStokesConfig:
    """Parameters of the pseudo-spectral vorticity generator (defaults: a laptop-sized run).

    FNO's exact nu = 1e-5 recipe is ``resolution=256, record_resolution=64, viscosity=1e-5,
    dt=1e-4, t_final=20, n_trajectories=1200`` (a GPU job; see benchmarks/gpu_ns_fno_recipe.py).
    """

    n_trajectories: int = param(48, ge=1)
    resolution: int = param(64, ge=8, multiple_of=2)  # solve grid N (N x N)
    record_resolution: int = param(64, ge=2, multiple_of=2)  # recorded grid M; M divides N
    viscosity: float = param(1.0e-3, gt=0)
    # None: the largest {1, 2, 5} x 10^k step <= stable_dt / 2 that divides record_every
    dt: float | None = param(1.0e-3, gt=0)
    t_final: float = param(30.0, gt=0)
    record_every: float = param(1.0, gt=0)
    seed: int = param(0, ge=0)
    forcing_amplitude: float = param(0.1, ge=0)
    grf_alpha: float = param(2.5, gt=0)
    grf_tau: float = param(7.0, gt=0)
    grf_sigma: float | None = param(None, gt=0)  # None: tau ** (alpha - 1), FNO's choice
    include_initial_state: bool = False  # prepend t = 0 to the recorded frames
    # simulated but not recorded: the first frame is at t_spinup + record_every, so a dataset
    # can start once the cascade from the smooth initial field has developed
    t_spinup: float = param(0.0, ge=0)
    downsample: str = param("spectral", choices=_DOWNSAMPLE_METHODS)
    # trajectories solved at once; None: as many as fit memory
    batch_size: int | None = param(None, ge=1)
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:1 ...
    dtype: str = param("float32", choices=("float32", "float64"))
    compile: bool = False  # torch.compile the step (worth it on a GPU, slow to start)
    # half | packed | auto (= half); same results to round-off
    layout: str = param("auto", choices=(*_LAYOUTS, "auto"))
    # raise | drop (drop the blown-up trajectories, listed in attrs)
    on_blowup: str = param("raise", choices=_ON_BLOWUP)
    blowup_tolerance: float = param(1.5, gt=0)  # allowed factor over the enstrophy bound
    dt_limit_factor: float = param(1.0, gt=0)  # dt may be this many times the a priori stable_dt

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, param_path: str = PARAM_PREFIX
    ) -> NavierStokesConfig:
        """Build from a parameters mapping (YAML); errors name ``<param_path>.<key>``."""
        return from_params(cls, params, param_path)

    from_dict = from_params

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
        times = self.t_spinup + self.record_every * np.arange(
            1, self.n_records + 1, dtype=np.float64
        )
        first = [self.t_spinup] if self.include_initial_state else []
        return np.concatenate([first, times])

    def validate(self, param_path: str = PARAM_PREFIX) -> NavierStokesConfig:
        """Raise ``ConfigError`` naming ``<param_path>.<field>`` for an unusable value: each
        field's type and bounds, then the rules that involve several fields."""
        check_fields(self, param_path)

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{param_path}.{name} = {getattr(self, name)!r}: {why}")

        if self.record_resolution > self.resolution or self.resolution % self.record_resolution:
            raise bad(
                "record_resolution",
                f"must divide the solve resolution {self.resolution} "
                "(record on the solve grid or a coarser one)",
            )
        if not _is_multiple(self.t_final, self.record_every):
            raise bad("t_final", f"must be a whole multiple of record_every={self.record_every}")
        if self.t_spinup >= self.t_final:
            raise bad("t_spinup", f"must be a number >= 0 and below t_final={self.t_final}")
        if self.t_spinup and not _is_multiple(self.t_spinup, self.record_every):
            raise bad("t_spinup", f"must be a whole multiple of record_every={self.record_every}")
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


def _as_config(cfg: NavierStokesConfig | Mapping[str, Any]) -> NavierStokesConfig:
    if isinstance(cfg, NavierStokesConfig):
        return cfg.validate()
    return NavierStokesConfig.from_params(cfg)


# --------------------------------------------------------------------------------------------
# Stability bound
# --------------------------------------------------------------------------------------------


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
