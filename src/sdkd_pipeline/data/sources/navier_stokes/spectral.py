"""Navier-Stokes spectral building blocks: grids, step operators, the GRF initial state and a
plain NumPy reference of the scheme.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------------------------
# Wavenumbers, operators
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
    dealias = (np.abs(ky) <= (2.0 / 3.0) * k_max) & (np.abs(kx) <= (2.0 / 3.0) * k_max)
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
    sqrt_eig = (
        (n**2)
        * math.sqrt(2.0)
        * sigma
        * (4.0 * np.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2.0)
    )
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
    coarse[half + 1 :, :half] = w_h[n - half + 1 :, :half]
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
