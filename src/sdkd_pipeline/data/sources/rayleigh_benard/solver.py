"""The built-in free-slip Rayleigh-Benard solver (batched torch), its linear theory and its
initial state.

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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.data.sources.rayleigh_benard.config import FreeSlipRBCConfig
from sdkd_pipeline.errors import ConfigError

# Linear onset of convection between free-slip walls (Rayleigh 1916): Ra_c = 27 pi^4 / 4 at the
# optimal horizontal wavenumber k_c = pi / sqrt(2).
FREE_SLIP_CRITICAL_RAYLEIGH = 27.0 * math.pi**4 / 4.0
FREE_SLIP_CRITICAL_WAVENUMBER = math.pi / math.sqrt(2.0)


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
