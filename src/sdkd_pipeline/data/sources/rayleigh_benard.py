"""Rayleigh-Benard convection: a built-in free-slip solver, The Well's HDF5 reader and downloader.

Free-slip solver
----------------
A 2-D Boussinesq solver with FREE-SLIP (stress-free), fixed-temperature walls, periodic in x.
It is a cheap, faithful stand-in for the field's no-slip reference (Dedalus, which The Well's
``rayleigh_benard`` files come from): the physics is the same convection, but the wall boundary
layers differ, so its numbers (Nusselt, onset) are the free-slip ones, not the no-slip ones.

Free-fall units (length: layer depth, time: free-fall time), T = 1 - z + theta, with the stream
function psi, u = psi_z, w = -psi_x and omega = -lap(psi)::

    d(omega)/dt + u.grad(omega) = sqrt(Pr/Ra) lap(omega) + d(theta)/dx
    d(theta)/dt + u.grad(theta) = w + (Ra*Pr)^(-1/2) lap(theta)

with psi = omega = theta = 0 at z = 0 and z = 1. All three are odd about both walls, so they are
sine series in z. The solver holds them as Fourier series on the doubled, periodic interval
z in [0, 2) (the odd extension): a plain 2-D FFT pseudo-spectral method with the 2/3 rule, where
the sine parity is an exact constraint. Round-off does not respect it, and the cosine (even)
modes it seeds are not held at zero by anything else, so every step re-projects the state onto
the odd parity (without that, runs blow up even below onset).

Time stepping is CNAB2: Crank-Nicolson on diffusion, second-order Adams-Bashforth (variable step)
on advection and on the buoyancy coupling terms. The step is chosen every step from a CFL bound
(``cfl``) and capped at ``dt``, and shortened so that records fall exactly on the record times.
One step size is shared by the whole batch of trajectories.

Output grid: x_i = i * Lx / nx (periodic), z_j = (j + 1/2) / nz (cell centres, uniform, the
walls are half a cell outside the first and last rows). Channels:

- ``buoyancy``: the full temperature T = 1 - z + theta (1 at the bottom wall, 0 at the top), the
  same quantity The Well calls buoyancy (with its delta b_0 = 1);
- ``velocity_x`` (u, horizontal) and ``velocity_y`` (w, vertical; the raw contract's y axis is z);
- ``pressure`` (optional, on by default): solved from the pressure Poisson equation
  lap p = -d_i d_j (u_i u_j) + d_z b at every record time, including the hydrostatic part of the
  background temperature, gauge: zero mean over the domain (The Well's gauge).

The Well
--------
``read_the_well_rbc`` reads The Well's ``rayleigh_benard`` HDF5 files (x: 512 horizontal,
y: 128 vertical on the solver's Chebyshev-like nodes, kept as they are) into the raw contract,
and ``download_the_well_rbc`` fetches them. The server's listing cannot be read offline, so the
file names are built from the dataset's published parameter grid (35 files per split, one per
(Rayleigh, Prandtl) pair); pass ``files`` to choose a subset or to override the list.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

DATASET_NAME = "rayleigh_benard"
FREE_SLIP_SOURCE = "generated:rayleigh_benard_free_slip"
RAW_DIR = Path("data/01_raw/rayleigh_benard")
DEFAULT_PARAM_PREFIX = "rayleigh_benard.source.generate_free_slip"
THE_WELL_PARAM_PREFIX = "rayleigh_benard.source.the_well"

# Linear onset of convection between free-slip walls (Rayleigh 1916): Ra_c = 27 pi^4 / 4 at the
# optimal horizontal wavenumber k_c = pi / sqrt(2).
FREE_SLIP_CRITICAL_RAYLEIGH = 27.0 * math.pi**4 / 4.0
FREE_SLIP_CRITICAL_WAVENUMBER = math.pi / math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreeSlipRBCConfig:
    """Parameters of the free-slip Rayleigh-Benard generator (free-fall units).

    The default (Ra = 1e5, Pr = 1, aspect 4, 128 x 32, float32) convects: plumes rise from the
    conduction state at t ~ 10, mix chaotically, and merge into large rolls by t ~ 50 (free-slip
    walls do not brake large rolls, so later the flow turns nearly steady). Like The Well, the
    data therefore covers the developing flow: the first ``t_spinup`` = 10 time units (invisible
    exponential growth of the noise) are simulated but not recorded, then frames every
    ``record_interval`` up to ``t_final`` inclusive (161 frames of 32 x 128). Measured on the
    shared 2-core machine: ~6 700 steps, ~1 min for 8 trajectories with one torch thread.
    At Ra = 1e6 use nz >= 64 (boundary layers ~ 1 / (2 Nu) ~ 0.025 need ~40 sine modes).
    """

    rayleigh: float = 1.0e5
    prandtl: float = 1.0
    aspect_ratio: float = 4.0  # Lx / Lz, Lz = 1
    nx: int = 128  # horizontal grid points (output columns)
    nz: int = 32  # vertical grid points (output rows, cell centres)
    dt: float = 0.02  # largest time step; the CFL bound usually picks a smaller one
    cfl: float = 0.4  # target Courant number (|u| dt/dx + |w| dt/dz)
    t_final: float = 50.0
    t_spinup: float = 10.0  # transient simulated but not recorded
    record_interval: float = 0.25
    n_trajectories: int = 8
    seed: int = 0
    perturbation_amplitude: float = 1.0e-3  # of the initial temperature noise
    include_pressure: bool = True
    device: str = "auto"  # auto (CUDA if available), cpu, cuda, cuda:1, ...
    dtype: str = "float32"  # float32 | float64 (solver precision; output is float32)

    @property
    def n_frames(self) -> int:
        return int(math.floor((self.t_final - self.t_spinup) / self.record_interval + 1e-9)) + 1

    @property
    def record_times(self) -> np.ndarray:
        return self.t_spinup + self.record_interval * np.arange(self.n_frames)

    @classmethod
    def from_dict(
        cls, params: Mapping[str, Any] | None, prefix: str = DEFAULT_PARAM_PREFIX
    ) -> FreeSlipRBCConfig:
        """Build from a parameters mapping (e.g. YAML); unknown keys are a ``ConfigError``."""
        params = dict(params or {})
        known = {f.name: f for f in dataclass_fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"{prefix}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in params.items():
            default = getattr(cls, name)
            values[name] = _coerce(value, type(default), f"{prefix}.{name}")
        cfg = cls(**values)
        cfg.validate(prefix)
        return cfg

    def validate(self, prefix: str = DEFAULT_PARAM_PREFIX) -> FreeSlipRBCConfig:
        """Raise ``ConfigError`` naming ``<prefix>.<field>`` for an unusable value."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{prefix}.{name} = {getattr(self, name)!r}: {why}")

        for name in (
            "rayleigh",
            "prandtl",
            "aspect_ratio",
            "dt",
            "cfl",
            "t_final",
            "record_interval",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise bad(name, "must be a finite number > 0")
        if self.cfl > 1.5:
            raise bad("cfl", "must be <= 1.5 (AB2 advection is unstable beyond ~1)")
        if not (math.isfinite(self.t_spinup) and 0 <= self.t_spinup <= self.t_final):
            raise bad("t_spinup", f"must lie in [0, t_final={self.t_final}]")
        if not (math.isfinite(self.perturbation_amplitude) and self.perturbation_amplitude >= 0):
            raise bad("perturbation_amplitude", "must be a finite number >= 0")
        if self.nx < 8:
            raise bad("nx", "must be an integer >= 8")
        if self.nz < 4:
            raise bad("nz", "must be an integer >= 4")
        if self.n_trajectories < 1:
            raise bad("n_trajectories", "must be an integer >= 1")
        if self.seed < 0:
            raise bad("seed", "must be an integer >= 0")
        if self.dtype not in ("float32", "float64"):
            raise bad("dtype", "must be 'float32' or 'float64'")
        try:
            resolve_device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise bad("device", f"is not usable here ({exc})") from None
        return self


def _coerce(value: Any, kind: type, where: str) -> Any:
    """Convert a YAML value to the field's type, refusing silent surprises (bools as numbers)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r}: must be true or false")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r}: must be a string")
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where} = {value!r}: must be a number")
    if kind is int:
        if isinstance(value, (int, np.integer)) or (
            isinstance(value, float) and value.is_integer()
        ):
            return int(value)
        raise ConfigError(f"{where} = {value!r}: must be an integer")
    try:
        return float(value)  # YAML reads "1e6" (no dot) as a string; accept it here
    except (TypeError, ValueError):
        raise ConfigError(f"{where} = {value!r}: must be a number") from None


# --------------------------------------------------------------------------------------------
# The free-slip solver
# --------------------------------------------------------------------------------------------


class FreeSlipBlowUpError(ConfigError):
    """The free-slip solution became non-finite or its step size collapsed (under-resolved)."""


class FreeSlipBoussinesqSolver:
    """Batched pseudo-spectral solver of 2-D free-slip Rayleigh-Benard convection (torch).

    State: the retained (2/3-rule) sine coefficients of omega and theta, shape
    (batch, n_sine, n_kx) complex, for sin(m pi z) exp(i kx x) with m = 1..n_sine. Transforms go
    through the odd extension on z in [0, 2) (a plain 2-D FFT of shape (2 nz, nx)); taking the
    sine coefficients back out of a transform keeps only the odd part, which is the per-step
    re-projection onto sine parity. Physical fields are exchanged on the (nz, nx) cell-centre
    grid of the layer z in (0, 1).
    """

    def __init__(
        self,
        *,
        rayleigh: float,
        prandtl: float,
        aspect_ratio: float,
        nx: int,
        nz: int,
        batch: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.rayleigh, self.prandtl = float(rayleigh), float(prandtl)
        self.nu = math.sqrt(self.prandtl / self.rayleigh)
        self.kappa = 1.0 / math.sqrt(self.rayleigh * self.prandtl)
        self.lx, self.nx, self.nz, self.batch = float(aspect_ratio), int(nx), int(nz), int(batch)
        self.device, self.dtype = torch.device(device), dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.nze = 2 * self.nz  # points on the doubled interval [0, 2)
        self.dx, self.dz = self.lx / self.nx, 1.0 / self.nz
        self.x = np.arange(self.nx) * self.dx
        self.z = (np.arange(self.nz) + 0.5) * self.dz
        # 2/3 rule: keep |m| < N/3 on each axis (N grid points on that axis).
        self.n_sine = (self.nze - 1) // 3
        self.n_kx = (self.nx - 1) // 3 + 1
        if self.n_sine < 1 or self.n_kx < 2:
            raise ValueError(f"grid {self.nx}x{self.nz} too small to keep any mode")

        real = dict(device=self.device, dtype=self.dtype)
        m = torch.arange(1, self.n_sine + 1, **real)
        self.kz = (math.pi * m)[:, None]  # sine modes, period 2 in z
        self.kx = (2.0 * math.pi / self.lx * torch.arange(self.n_kx, **real))[None, :]
        self.k2 = self.kx**2 + self.kz**2  # > 0 everywhere: m >= 1
        self.ikx = (1j * self.kx).to(self.cdtype)
        self.ikz = (1j * self.kz).to(self.cdtype)
        # The grid sits at (j + 1/2) dz, so samples carry a half-cell phase relative to
        # coefficients about z = 0 (where oddness is simply c(-m) = -c(m)).
        half_cell = (0.5 * self.dz * self.kz).to(self.cdtype)
        self._phase_pos = torch.exp(1j * half_cell)  # applied to mode +m before synthesis
        self._phase_neg = torch.exp(-1j * half_cell).flip(0)  # to modes -n_sine..-1
        shape = (self.batch, self.n_sine, self.n_kx)
        self.omega_s = torch.zeros(shape, dtype=self.cdtype, device=self.device)
        self.theta_s = torch.zeros_like(self.omega_s)
        self.time = 0.0
        self.n_steps = 0
        self._prev_rhs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._prev_dt: float | None = None

    # ---- transforms -------------------------------------------------------------------------

    def synthesize(self, half: torch.Tensor, parity: torch.Tensor | float) -> torch.Tensor:
        """Grid values on [0, 2) x [0, Lx) of series given by coefficients for m >= 1.

        ``half``: (..., n_sine, n_kx) coefficients of modes +m; mode -m is ``parity`` times
        mode +m (-1: sine series, odd in z; +1: cosine series without its m = 0 term).
        """
        full = torch.zeros(
            (*half.shape[:-2], self.nze, self.nx // 2 + 1), dtype=self.cdtype, device=self.device
        )
        full[..., 1 : self.n_sine + 1, : self.n_kx] = half * self._phase_pos
        full[..., self.nze - self.n_sine :, : self.n_kx] = parity * half.flip(-2) * self._phase_neg
        return torch.fft.irfft2(full, s=(self.nze, self.nx))

    def analyze_odd(self, grid: torch.Tensor) -> torch.Tensor:
        """Retained sine coefficients of grid values on [0, 2): the odd part, dealiased."""
        c = torch.fft.rfft2(grid)
        pos = c[..., 1 : self.n_sine + 1, : self.n_kx] * self._phase_pos.conj()
        neg = (c[..., self.nze - self.n_sine :, : self.n_kx] * self._phase_neg.conj()).flip(-2)
        return 0.5 * (pos - neg)

    def extend(self, f: torch.Tensor, odd: bool = True) -> torch.Tensor:
        """(..., nz, nx) on the layer -> (..., 2 nz, nx) on [0, 2) by reflection about z = 1."""
        mirrored = f.flip(-2)
        return torch.cat([f, -mirrored if odd else mirrored], dim=-2)

    # ---- state ------------------------------------------------------------------------------

    def set_state(self, theta: torch.Tensor | np.ndarray, omega: Any = None) -> None:
        """Set theta (and omega, default 0) from (batch, nz, nx) grid values on the layer."""
        self.theta_s = self._grid_to_state(theta)
        self.omega_s = (
            torch.zeros_like(self.theta_s) if omega is None else self._grid_to_state(omega)
        )
        self._prev_rhs, self._prev_dt = None, None

    def _grid_to_state(self, f: Any) -> torch.Tensor:
        f = f if torch.is_tensor(f) else torch.as_tensor(np.asarray(f))
        f = f.to(device=self.device, dtype=self.dtype)
        if tuple(f.shape) != (self.batch, self.nz, self.nx):
            raise ValueError(
                f"expected a field of shape {(self.batch, self.nz, self.nx)}, got {tuple(f.shape)}"
            )
        return self.analyze_odd(self.extend(f, odd=True))

    def _stream_function(self) -> torch.Tensor:
        return self.omega_s / self.k2

    # ---- dynamics ---------------------------------------------------------------------------

    # Parities of the fields synthesised each step: w, omega_x, theta_x are odd in z (sine);
    # u = psi_z, omega_z, theta_z are even (cosine).
    _STEP_FIELDS = ("w", "omega_x", "theta_x", "u", "omega_z", "theta_z")

    def _rhs(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Explicit right-hand sides (advection + buoyancy coupling) and the CFL rate."""
        psi = self._stream_function()
        w_s = -self.ikx * psi
        half = torch.stack(
            [
                w_s,
                self.ikx * self.omega_s,
                self.ikx * self.theta_s,
                self.ikz * psi,  # u = psi_z (cosine coefficients)
                self.ikz * self.omega_s,
                self.ikz * self.theta_s,
            ],
            dim=1,
        )
        w, omega_x, theta_x, u, omega_z, theta_z = self.synthesize(
            half, self._step_parity()
        ).unbind(dim=1)
        advection = torch.stack([u * omega_x + w * omega_z, u * theta_x + w * theta_z], dim=1)
        adv_omega, adv_theta = self.analyze_odd(advection).unbind(dim=1)
        rhs_omega = self.ikx * self.theta_s - adv_omega
        rhs_theta = w_s - adv_theta
        cfl_rate = (u.abs().amax() / self.dx + w.abs().amax() / self.dz).item()
        return rhs_omega, rhs_theta, cfl_rate

    def _step_parity(self) -> torch.Tensor:
        if not hasattr(self, "_parity6"):
            self._parity6 = torch.tensor(
                [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], device=self.device, dtype=self.dtype
            )[:, None, None].to(self.cdtype)
        return self._parity6

    def advance_to(
        self, t_target: float, *, dt_max: float, cfl: float, dt_min: float = 1e-7
    ) -> None:
        """Step until ``self.time == t_target`` (CNAB2, step from the CFL bound, capped)."""
        while self.time < t_target - 1e-12 * max(1.0, abs(t_target)):
            rhs_omega, rhs_theta, cfl_rate = self._rhs()
            if not math.isfinite(cfl_rate):
                raise FreeSlipBlowUpError(
                    f"free-slip RBC solution became non-finite at t={self.time:.4g} "
                    f"(Ra={self.rayleigh:g}, Pr={self.prandtl:g}, {self.nx}x{self.nz}); "
                    "raise nx/nz, or lower dt/cfl or rayleigh"
                )
            dt_cfl = min(dt_max, cfl / cfl_rate) if cfl_rate > 0 else dt_max
            if dt_cfl < dt_min:
                raise FreeSlipBlowUpError(
                    f"free-slip RBC step size collapsed to {dt_cfl:.3g} at t={self.time:.4g} "
                    f"(CFL rate {cfl_rate:.3g}): the flow is blowing up or under-resolved at "
                    f"Ra={self.rayleigh:g}, {self.nx}x{self.nz}; raise nx/nz or lower rayleigh"
                )
            remaining = t_target - self.time
            n_left = max(1, math.ceil(remaining / dt_cfl - 1e-9))
            dt = remaining / n_left
            self._cnab2_step(dt, rhs_omega, rhs_theta)
            self.time = t_target if n_left == 1 else self.time + dt
            self.n_steps += 1

    def _cnab2_step(self, dt: float, rhs_omega: torch.Tensor, rhs_theta: torch.Tensor) -> None:
        if self._prev_rhs is None:
            expl_omega, expl_theta = rhs_omega, rhs_theta  # first step: forward Euler
        else:
            r = dt / self._prev_dt
            prev_omega, prev_theta = self._prev_rhs
            expl_omega = (1 + 0.5 * r) * rhs_omega - 0.5 * r * prev_omega
            expl_theta = (1 + 0.5 * r) * rhs_theta - 0.5 * r * prev_theta
        half_nu = (0.5 * dt * self.nu) * self.k2
        half_kappa = (0.5 * dt * self.kappa) * self.k2
        self.omega_s = ((1 - half_nu) * self.omega_s + dt * expl_omega) / (1 + half_nu)
        self.theta_s = ((1 - half_kappa) * self.theta_s + dt * expl_theta) / (1 + half_kappa)
        self._prev_rhs, self._prev_dt = (rhs_omega, rhs_theta), dt

    # ---- diagnostics on the layer (batch, nz, nx) -------------------------------------------

    def _layer(self, f_ext: torch.Tensor) -> torch.Tensor:
        return f_ext[..., : self.nz, :]

    def theta(self) -> torch.Tensor:
        return self._layer(self.synthesize(self.theta_s, -1.0))

    def velocity(self) -> tuple[torch.Tensor, torch.Tensor]:
        u, w = self._velocity_ext()
        return self._layer(u), self._layer(w)

    def _velocity_ext(self) -> tuple[torch.Tensor, torch.Tensor]:
        psi = self._stream_function()
        parity = torch.tensor([1.0, -1.0], dtype=self.dtype, device=self.device)
        uw = self.synthesize(
            torch.stack([self.ikz * psi, -self.ikx * psi], dim=1), parity[:, None, None]
        )
        return uw[:, 0], uw[:, 1]

    def pressure(self) -> torch.Tensor:
        """Total pressure on the layer, from lap p = -d_i d_j(u_i u_j) + d_z b, zero mean.

        The dynamic part is even about the walls (a cosine series), which is the free-slip
        Neumann condition; the background b0 = 1 - z adds the hydrostatic z - z^2/2.
        """
        u, w = self._velocity_ext()
        c = torch.fft.rfft2(torch.stack([u * u, u * w, w * w], dim=1))
        theta_full = torch.fft.rfft2(self.synthesize(self.theta_s, -1.0))
        nzk, nxk = c.shape[-2:]
        mz = torch.fft.fftfreq(nzk, d=1.0 / nzk, device=self.device, dtype=self.dtype)
        kz = (math.pi * mz)[:, None]
        kx = (2.0 * math.pi / self.lx) * torch.arange(nxk, device=self.device, dtype=self.dtype)
        kx = kx[None, :]
        mx = torch.arange(nxk, device=self.device)
        keep = (mz.abs() < self.nze / 3.0)[:, None] & (mx < self.nx / 3.0)[None, :]
        k2 = kx**2 + kz**2
        inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        uu, uw, ww = c.unbind(dim=1)
        # The half-cell phase multiplies both sides of the Poisson equation alike: no correction.
        rhs = kx * kx * uu + 2 * kx * kz * uw + kz * kz * ww + 1j * kz * theta_full
        p_hat = -rhs * inv_k2 * keep
        p_ext = torch.fft.irfft2(p_hat, s=(self.nze, self.nx))
        # Even about z = 0 (and z = 1): on the half-cell grid that reflection is a flip.
        p_dyn = self._layer(0.5 * (p_ext + p_ext.flip(-2)))
        z = torch.as_tensor(self.z, device=self.device, dtype=self.dtype)[:, None]
        hydrostatic = z - 0.5 * z**2 - 1.0 / 3.0
        return p_dyn + hydrostatic

    def kinetic_energy(self) -> torch.Tensor:
        """Volume mean of (u^2 + w^2) / 2 per trajectory."""
        u, w = self.velocity()
        return 0.5 * (u**2 + w**2).mean(dim=(-2, -1))

    def nusselt(self) -> torch.Tensor:
        """Nu = 1 + <w theta> / kappa per trajectory (volume mean)."""
        _, w = self.velocity()
        return 1.0 + (w * self.theta()).mean(dim=(-2, -1)) / self.kappa


def free_slip_growth_rate(rayleigh: float, prandtl: float, k: float, n: int = 1) -> float:
    """Linear growth rate (free-fall units) of the mode sin(n pi z) exp(i k x), free-slip walls.

    With a^2 = k^2 + (n pi)^2, nu = sqrt(Pr/Ra), kappa = 1/sqrt(Ra Pr), the linearised equations
    give sigma^2 + (nu + kappa) a^2 sigma + nu kappa a^4 - k^2 / a^2 = 0; this is the larger root.
    """
    nu, kappa = math.sqrt(prandtl / rayleigh), 1.0 / math.sqrt(rayleigh * prandtl)
    a2 = k * k + (n * math.pi) ** 2
    disc = ((nu - kappa) * a2) ** 2 + 4.0 * k * k / a2
    return 0.5 * (-(nu + kappa) * a2 + math.sqrt(disc))


def _initial_theta(cfg: FreeSlipRBCConfig, nz: int, nx: int) -> np.ndarray:
    return initial_theta(cfg)


def initial_theta(cfg: FreeSlipRBCConfig, first_trajectory: int = 0) -> np.ndarray:
    """White noise tapered by 4 z (1 - z), one independent stream per trajectory:
    ``(n_trajectories, nz, nx)`` for trajectories ``first_trajectory, first_trajectory + 1, ...``.

    Trajectory i's noise depends on (seed, i) only, not on n_trajectories, so
    ``first_trajectory=n`` gives states that a dataset of n trajectories does not hold.
    """
    nz, nx = cfg.nz, cfg.nx
    z = (np.arange(nz) + 0.5) / nz
    taper = (4.0 * z * (1.0 - z))[:, None]
    streams = np.random.SeedSequence(cfg.seed).spawn(first_trajectory + cfg.n_trajectories)
    streams = streams[first_trajectory:]
    noise = np.stack([np.random.default_rng(s).standard_normal((nz, nx)) for s in streams])
    return cfg.perturbation_amplitude * taper * noise


def generate_rayleigh_benard_free_slip(
    cfg: FreeSlipRBCConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    *,
    initial_theta: np.ndarray | None = None,
    prefix: str = DEFAULT_PARAM_PREFIX,
) -> xr.Dataset:
    """Simulate free-slip Rayleigh-Benard convection and return it as a raw dataset.

    ``cfg`` is a ``FreeSlipRBCConfig`` or a parameters mapping (validated, errors name
    ``<prefix>.<field>``). ``initial_theta`` (n_trajectories, nz, nx) replaces the random initial
    temperature perturbation (used by tests, e.g. a single linear mode).

    Channels: buoyancy (= T = 1 - z + theta), velocity_x, velocity_y (vertical), and pressure
    when ``include_pressure``. Dims (trajectory, time, channel, y=z, x); time is the physical
    time from the start of the run (the first ``t_spinup`` units are not recorded).
    Raises ``FreeSlipBlowUpError`` (a ``ConfigError``) if the solution becomes non-finite.
    """
    if cfg is None or isinstance(cfg, Mapping):
        cfg = FreeSlipRBCConfig.from_dict(cfg, prefix=prefix)
    else:
        cfg.validate(prefix)
    device = resolve_device(cfg.device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    solver = FreeSlipBoussinesqSolver(
        rayleigh=cfg.rayleigh,
        prandtl=cfg.prandtl,
        aspect_ratio=cfg.aspect_ratio,
        nx=cfg.nx,
        nz=cfg.nz,
        batch=cfg.n_trajectories,
        device=device,
        dtype=dtype,
    )
    if initial_theta is None:
        theta0 = _initial_theta(cfg, cfg.nz, cfg.nx)
    else:
        theta0 = np.asarray(initial_theta, dtype=np.float64)
        expected = (cfg.n_trajectories, cfg.nz, cfg.nx)
        if theta0.shape != expected:
            raise ConfigError(
                f"{prefix}: initial_theta has shape {theta0.shape}, expected {expected} "
                "(n_trajectories, nz, nx)"
            )
    solver.set_state(theta0)

    channels = ["buoyancy", "velocity_x", "velocity_y"] + (
        ["pressure"] if cfg.include_pressure else []
    )
    times = cfg.record_times
    out = np.empty((cfg.n_trajectories, len(times), len(channels), cfg.nz, cfg.nx), np.float32)
    background = torch.as_tensor(1.0 - solver.z, device=device, dtype=dtype)[:, None]

    bar = _progress_bar(len(times), progress, "rayleigh_benard free-slip")
    started = _time.perf_counter()
    try:
        for i, t_rec in enumerate(times):
            solver.advance_to(float(t_rec), dt_max=cfg.dt, cfl=cfg.cfl)
            u, w = solver.velocity()
            frame = [solver.theta() + background, u, w]
            if cfg.include_pressure:
                frame.append(solver.pressure())
            frame_np = torch.stack(frame, dim=1).cpu().numpy()
            if not np.isfinite(frame_np).all():
                raise FreeSlipBlowUpError(
                    f"free-slip RBC solution became non-finite at t={t_rec:.4g} "
                    f"(Ra={cfg.rayleigh:g}, {cfg.nx}x{cfg.nz}); raise "
                    f"{prefix}.nx/nz, or lower {prefix}.dt/cfl or {prefix}.rayleigh"
                )
            out[:, i] = frame_np
            if bar is not None:
                bar.update(1)
                bar.set_postfix(t=f"{t_rec:.2f}", steps=solver.n_steps)
    finally:
        if bar is not None:
            bar.close()
    elapsed = _time.perf_counter() - started

    attrs = {f"solver_{k}": (str(v) if isinstance(v, bool) else v) for k, v in asdict(cfg).items()}
    attrs.update(
        {
            "solver": "free-slip 2-D Boussinesq, Fourier (x) x sine (z) pseudo-spectral, "
            "2/3 dealiasing, CNAB2, odd-parity re-projection each step",
            "boundary_conditions": "periodic in x; free-slip, fixed temperature walls at z=0,1",
            "units": "free-fall (length: layer depth, time: free-fall time)",
            "buoyancy_definition": "T = 1 - z + theta (1 at the bottom wall, 0 at the top)",
            "pressure_definition": (
                "total pressure, lap p = -d_i d_j(u_i u_j) + d_z b, zero mean"
                if cfg.include_pressure
                else "not output (include_pressure=false)"
            ),
            "grid_z": "cell centres z_j = (j + 1/2) / nz",
            "viscosity": solver.nu,
            "diffusivity": solver.kappa,
            "n_solver_steps": int(solver.n_steps),
            "device": str(device),
            "wall_time_s": round(elapsed, 3),
        }
    )
    return make_raw(
        out,
        dataset=DATASET_NAME,
        source=FREE_SLIP_SOURCE,
        channels=channels,
        time=times.astype(np.float64),
        y=solver.z.astype(np.float64),
        x=solver.x.astype(np.float64),
        attrs=attrs,
    )


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


# --------------------------------------------------------------------------------------------
# The Well: file names, URLs, download
# --------------------------------------------------------------------------------------------

THE_WELL_BASE_URL = "https://sdsc-users.flatironinstitute.org/~polymathic/data/the_well"
THE_WELL_SPLITS = ("train", "valid", "test")
# The published parameter grid; every split holds one file per (Rayleigh, Prandtl) pair, with
# the same names (different trajectories), so splits must live in separate folders.
THE_WELL_RBC_RAYLEIGH = ("1e6", "1e7", "1e8", "1e9", "1e10")
THE_WELL_RBC_PRANDTL = ("1e-1", "2e-1", "5e-1", "1", "2", "5", "10")
THE_WELL_RBC_FIELDS = ("buoyancy", "pressure", "velocity_x", "velocity_y")


def the_well_rbc_file_names() -> list[str]:
    """The 35 file names of one split of The Well's ``rayleigh_benard`` (built, not listed)."""
    return [
        f"rayleigh_benard_Rayleigh_{ra}_Prandtl_{pr}.hdf5"
        for ra in THE_WELL_RBC_RAYLEIGH
        for pr in THE_WELL_RBC_PRANDTL
    ]


def the_well_rbc_urls(
    split: str = "train",
    files: Sequence[str] | None = None,
    base_url: str = THE_WELL_BASE_URL,
) -> list[str]:
    """URLs ``{base_url}/datasets/rayleigh_benard/data/{split}/{file}`` (The Well's layout).

    ``files`` defaults to all 35 files of the grid (``the_well_rbc_file_names``); each is ~8 GB
    in ``train`` (40 trajectories x 200 steps x 4 fields x 512 x 128 float32).
    """
    if split not in THE_WELL_SPLITS:
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.split = {split!r}: must be one of {THE_WELL_SPLITS}"
        )
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.base_url = {base_url!r}: must be an http(s) URL"
        )
    names = the_well_rbc_file_names() if files is None else list(files)
    if not names:
        raise ConfigError(f"{THE_WELL_PARAM_PREFIX}.files: empty list, name at least one file")
    for name in names:
        if (
            not isinstance(name, str)
            or "/" in name
            or "\\" in name
            or name.startswith(".")
            or not name.endswith((".hdf5", ".h5"))
        ):
            raise ConfigError(
                f"{THE_WELL_PARAM_PREFIX}.files: {name!r} is not a plain .hdf5/.h5 file name "
                f"(e.g. {the_well_rbc_file_names()[0]!r})"
            )
    root = base_url.rstrip("/")
    return [f"{root}/datasets/{DATASET_NAME}/data/{split}/{name}" for name in names]


def download_the_well_rbc(
    dest_dir: str | Path = RAW_DIR,
    split: str = "train",
    files: Sequence[str] | None = None,
    base_url: str = THE_WELL_BASE_URL,
    progress: bool = True,
) -> list[Path]:
    """Download The Well ``rayleigh_benard`` files into ``dest_dir/<split>/`` and return them.

    The server's directory listing is not needed (nor reachable offline): names come from
    ``files`` or the published grid. Files already complete are kept by ``download_file``'s own
    logic; each download goes through ``sdkd_pipeline.data.download.download_file`` (retries,
    atomic rename). Mind the size: ~8 GB per train file, ~1 GB per valid/test file.
    """
    from sdkd_pipeline.data.download import download_file  # lazy: separate module

    urls = the_well_rbc_urls(split, files, base_url)
    target = Path(dest_dir) / split
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for url in urls:
        dest = target / url.rsplit("/", 1)[-1]
        out.append(Path(download_file(url, dest, progress=progress)))
    return out


# --------------------------------------------------------------------------------------------
# The Well: reader
# --------------------------------------------------------------------------------------------


def _missing_well_files(what: str) -> MissingRawDataError:
    return MissingRawDataError(
        f"{what}: put The Well's rayleigh_benard HDF5 files "
        f"({the_well_rbc_file_names()[0]}, ...) in {RAW_DIR}/ (any sub-folders, e.g. "
        f"{RAW_DIR}/train/), or download them with "
        f"`python -m sdkd_pipeline.data.sources.rayleigh_benard --split train "
        f"--files {the_well_rbc_file_names()[0]}` (~8 GB per train file); "
        f"or set {DATASET_NAME}.source.kind: generate_free_slip to use the built-in solver"
    )


def _expand_well_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise _missing_well_files(f"{THE_WELL_PARAM_PREFIX}.paths is empty")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in (".hdf5", ".h5") and q.is_file())
            if not found:
                raise _missing_well_files(f"{p} holds no .hdf5/.h5 file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise _missing_well_files(f"{p} does not exist")
    return files


@dataclass
class _WellFileInfo:
    path: Path
    n_traj: int
    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    rayleigh: float
    prandtl: float


def _scalar(h5: Any, name: str) -> float:
    """Rayleigh / Prandtl from ``scalars/<name>``, else the root attribute, else NaN."""
    if "scalars" in h5 and name in h5["scalars"]:
        return float(np.asarray(h5["scalars"][name][()]).reshape(-1)[0])
    if name in h5.attrs:
        return float(np.asarray(h5.attrs[name]).reshape(-1)[0])
    return float("nan")


def _inspect_well_file(path: Path, fields_wanted: Sequence[str]) -> _WellFileInfo:
    """Open one file and check the layout; DataError naming the file if anything is off."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"{path}: not a readable HDF5 file ({exc}); a truncated or corrupt download? "
            "Delete it and download it again"
        ) from None
    with h5:
        for group in ("dimensions/time", "dimensions/x", "dimensions/y"):
            if group not in h5:
                raise DataError(f"{path}: missing '{group}' (not a The Well file?)")
        spatial = h5["dimensions"].attrs.get("spatial_dims")
        if spatial is not None:
            names = [s.decode() if isinstance(s, bytes) else str(s) for s in spatial]
            if names != ["x", "y"]:
                raise DataError(f"{path}: spatial_dims {names}, expected ['x', 'y']")
        time = np.asarray(h5["dimensions/time"][()], dtype=np.float64)
        if time.ndim == 2:  # sample-varying time: every trajectory must share it
            if not np.allclose(time, time[:1]):
                raise DataError(f"{path}: trajectories have different time grids")
            time = time[0]
        x = np.asarray(h5["dimensions/x"][()], dtype=np.float64).reshape(-1)
        y = np.asarray(h5["dimensions/y"][()], dtype=np.float64).reshape(-1)
        n_t, nx, ny = time.size, x.size, y.size
        n_traj = None
        for name in fields_wanted:
            key = "t1_fields/velocity" if name.startswith("velocity_") else f"t0_fields/{name}"
            if key not in h5:
                raise DataError(f"{path}: missing '{key}' (needed for field '{name}')")
            ds = h5[key]
            tail = (nx, ny, 2) if key.startswith("t1") else (nx, ny)
            if ds.ndim != 2 + len(tail) or tuple(ds.shape[1:]) != (n_t, *tail):
                raise DataError(
                    f"{path}: '{key}' has shape {ds.shape}, expected "
                    f"(n_trajectories, {n_t}, {', '.join(map(str, tail))}) from dimensions "
                    "time, x, y"
                )
            if n_traj is None:
                n_traj = int(ds.shape[0])
            elif ds.shape[0] != n_traj:
                raise DataError(f"{path}: fields disagree on the number of trajectories")
        if not n_traj:
            raise DataError(f"{path}: no trajectories")
        for name, values in (("time", time), ("x", x), ("y", y)):
            if not np.isfinite(values).all():
                raise DataError(f"{path}: NaN/Inf in dimensions/{name}")
        return _WellFileInfo(
            path, n_traj, time, x, y, _scalar(h5, "Rayleigh"), _scalar(h5, "Prandtl")
        )


def _read_well_block(
    info: _WellFileInfo, fields_wanted: Sequence[str], traj: slice, time: slice
) -> np.ndarray:
    """(traj, time, channel, y, x) float32 from one file; the file stores (..., x, y)."""
    import h5py

    try:
        with h5py.File(info.path, "r") as h5:
            parts = []
            velocity = None
            for name in fields_wanted:
                if name.startswith("velocity_"):
                    if velocity is None:
                        velocity = h5["t1_fields/velocity"][traj, time]
                    parts.append(velocity[..., 0 if name == "velocity_x" else 1])
                else:
                    parts.append(h5[f"t0_fields/{name}"][traj, time])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"{info.path}: reading failed ({exc}); a truncated or corrupt file? "
            "Delete it and download it again"
        ) from None
    block = np.stack(parts, axis=2).astype(np.float32, copy=False)
    return np.ascontiguousarray(block.transpose(0, 1, 2, 4, 3))  # (.., x, y) -> (.., y, x)


class _WellLazyArray:
    """Array-like over several files for ``dask.array.from_array``; opens files per read."""

    def __init__(
        self, infos: list[_WellFileInfo], fields_wanted: Sequence[str], n_per_file: list[int]
    ) -> None:
        self.infos, self.fields_wanted, self.n_per_file = infos, list(fields_wanted), n_per_file
        self.offsets = np.cumsum([0] + n_per_file)
        first = infos[0]
        self.shape = (
            int(self.offsets[-1]),
            first.time.size,
            len(fields_wanted),
            first.y.size,
            first.x.size,
        )
        self.dtype = np.dtype(np.float32)
        self.ndim = 5

    def __getitem__(self, key: tuple) -> np.ndarray:
        key = key + (slice(None),) * (5 - len(key))
        trajs = range(*key[0].indices(self.shape[0]))
        t_sl = key[1]
        blocks = []
        for f, info in enumerate(self.infos):
            lo, hi = self.offsets[f], self.offsets[f + 1]
            local = [i - lo for i in trajs if lo <= i < hi]
            if local:
                sl = slice(local[0], local[-1] + 1)
                blocks.append(_read_well_block(info, self.fields_wanted, sl, t_sl))
        out = np.concatenate(blocks, axis=0)
        return out[:, :, key[2], key[3], key[4]]


def read_the_well_rbc(
    paths: str | Path | Sequence[str | Path] = RAW_DIR,
    fields: Sequence[str] = THE_WELL_RBC_FIELDS,
    *,
    trajectories_per_file: int | None = None,
    lazy: bool = False,
) -> xr.Dataset:
    """Read The Well ``rayleigh_benard`` HDF5 files into the raw contract.

    ``paths``: files and/or folders (searched recursively for .hdf5/.h5). Files are joined along
    trajectory; they must share time, x and y, else ``DataError``. Each file stores
    ``t0_fields/{buoyancy,pressure}`` as (n_traj, n_t, x=512, y=128) and ``t1_fields/velocity``
    as (..., 2) with components (x, y); they are transposed to (y, x) so that rows are the
    vertical. The y coordinate keeps the file's values (non-uniform, Chebyshev-like nodes).
    ``trajectories_per_file`` keeps the first n trajectories of each file (a train file holds
    ~8 GB); ``lazy`` returns a dask-backed dataset read on demand (needs dask).
    Per-trajectory coordinates: ``rayleigh``, ``prandtl``, ``source_file``, ``file_trajectory``.
    """
    fields_wanted = list(fields)
    unknown = [f for f in fields_wanted if f not in THE_WELL_RBC_FIELDS]
    if not fields_wanted or unknown or len(set(fields_wanted)) != len(fields_wanted):
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.fields = {fields_wanted!r}: choose distinct names "
            f"among {list(THE_WELL_RBC_FIELDS)}"
        )
    if trajectories_per_file is not None and (
        isinstance(trajectories_per_file, bool) or int(trajectories_per_file) < 1
    ):
        raise ConfigError(
            f"{THE_WELL_PARAM_PREFIX}.trajectories_per_file = {trajectories_per_file!r}: "
            "must be an integer >= 1 or null"
        )
    files = _expand_well_paths(paths)
    infos = [_inspect_well_file(p, fields_wanted) for p in files]
    ref = infos[0]
    for info in infos[1:]:
        for name in ("time", "x", "y"):
            a, b = getattr(ref, name), getattr(info, name)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-6, atol=1e-9):
                raise DataError(
                    f"{info.path}: its '{name}' grid ({b.size} values) differs from that of "
                    f"{ref.path} ({a.size} values); read files of one resolution and time grid "
                    "together"
                )
    n_per_file = [
        info.n_traj if trajectories_per_file is None else min(info.n_traj, trajectories_per_file)
        for info in infos
    ]
    if lazy:
        import dask.array as da

        lazy_array = _WellLazyArray(infos, fields_wanted, n_per_file)
        data = da.from_array(
            lazy_array,
            chunks=(1, min(20, ref.time.size), len(fields_wanted), -1, -1),
            asarray=True,
            fancy=False,
        )
    else:
        data = np.empty(
            (sum(n_per_file), ref.time.size, len(fields_wanted), ref.y.size, ref.x.size),
            dtype=np.float32,
        )
        start = 0
        for info, n in zip(infos, n_per_file, strict=True):
            for i in range(n):  # one trajectory at a time keeps peak memory near the output
                block = _read_well_block(info, fields_wanted, slice(i, i + 1), slice(None))
                if not np.isfinite(block).all():
                    bad = [
                        f
                        for c, f in enumerate(fields_wanted)
                        if not np.isfinite(block[:, :, c]).all()
                    ]
                    raise DataError(f"{info.path}: NaN/Inf in trajectory {i}, field(s) {bad}")
                data[start + i] = block[0]
            start += n

    traj_file = np.concatenate(
        [[str(info.path.name)] * n for info, n in zip(infos, n_per_file, strict=True)]
    )
    extra = {
        "rayleigh": ("trajectory", np.repeat([i.rayleigh for i in infos], n_per_file)),
        "prandtl": ("trajectory", np.repeat([i.prandtl for i in infos], n_per_file)),
        "source_file": ("trajectory", traj_file.astype(str)),
        "file_trajectory": ("trajectory", np.concatenate([np.arange(n) for n in n_per_file])),
    }
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"
    return make_raw(
        data,
        dataset=DATASET_NAME,
        source=source,
        channels=fields_wanted,
        time=ref.time,
        y=ref.y,
        x=ref.x,
        extra_coords=extra,
        attrs={
            "origin": "The Well rayleigh_benard (Dedalus, no-slip walls)",
            "files": ", ".join(str(p) for p in files),
            "grid_y": "as stored: vertical, non-uniform (Chebyshev-like) nodes",
            "buoyancy_definition": "The Well's buoyancy b, b(z=0)=delta_b0, b(z=1)=0",
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sdkd_pipeline.data.sources.rayleigh_benard --split train --files NAME ...``"""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m sdkd_pipeline.data.sources.rayleigh_benard",
        description="Download The Well's rayleigh_benard HDF5 files (~8 GB per train file).",
    )
    parser.add_argument("--dest", default=str(RAW_DIR))
    parser.add_argument("--split", default="train", choices=THE_WELL_SPLITS)
    parser.add_argument(
        "--files",
        nargs="+",
        default=None,
        help="file names (default: all 35 of the published Ra x Pr grid)",
    )
    parser.add_argument("--base-url", default=THE_WELL_BASE_URL)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    paths = download_the_well_rbc(
        args.dest, args.split, args.files, args.base_url, progress=not args.no_progress
    )
    print(f"{len(paths)} file(s) in {Path(args.dest) / args.split}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
