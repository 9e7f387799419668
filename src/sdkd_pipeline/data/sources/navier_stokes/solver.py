"""The batched torch pseudo-spectral vorticity solver (CPU or CUDA), eager or ``torch.compile``d.

``VorticitySolver`` steps a batch of trajectories with the scheme of ``spectral`` (one
multiply, one batched inverse FFT, two products, one forward FFT and one fused update a step)
and checks every record against the enstrophy bound ||w(t)||_2 <= ||w0||_2 + t ||f||_2 (the
run-time layer of the stability guard described in ``config``); ``RunDiagnostics`` is what a
run measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sdkd_pipeline.data.sources.navier_stokes.config import _LAYOUTS
from sdkd_pipeline.data.sources.navier_stokes.spectral import (
    forcing_field,
    spectral_operators,
    wavenumbers,
)
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError


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
        ops = (
            half
            if layout == "half"
            else spectral_operators(
                self.n, self.viscosity, self.dt, self.forcing_amplitude, full=True
            )
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

    def to_physical(
        self, state: torch.Tensor, m: int | None = None, method: str = "spectral"
    ) -> torch.Tensor:
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
        coarse[..., half + 1 :, :half] = w_h[..., n - half + 1 :, :half]
        return torch.fft.irfft2(coarse, s=(m, m)) * (m / n) ** 2

    def rms(self, state: torch.Tensor) -> torch.Tensor:
        """Root-mean-square vorticity per trajectory (Parseval)."""
        power = (state.real**2 + state.imag**2) * self.parseval_weights
        return torch.sqrt(power.sum(dim=(-2, -1))) / self.n**2

    def _half_fields(self, state: torch.Tensor, which: slice) -> torch.Tensor:
        w_h = self.half_plane(state)
        return torch.fft.irfft2(
            w_h.unsqueeze(-3) * self.half_derivatives[which], s=(self.n, self.n)
        )

    def cutoff_share(self, state: torch.Tensor) -> torch.Tensor:
        """Per trajectory, the share of the enstrophy in the outer fifth of the dealiased
        shells (0.8 k_d < |k| <= k_d, k_d = n/3): the resolution check. A resolved flow has
        next to nothing there; a pile-up near the cutoff means the grid is too coarse."""
        w_h = self.half_plane(state)
        if self._cutoff_mask is None:
            ky, kx = wavenumbers(self.n)
            kmag = np.sqrt(kx**2 + ky**2)
            k_d = self.n / 3.0
            self._cutoff_mask = torch.as_tensor(
                (kmag > 0.8 * k_d) & (kmag <= k_d), device=self.device
            )
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
                torch.empty(
                    (batch, n_fields, n, n),
                    dtype=self.cdtype if self.layout == "packed" else self.dtype,
                    **kw,
                ),
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
                args = (
                    self._derivatives_imag,
                    self.c_w,
                    self.c_nl,
                    torch.view_as_real(self.forcing_term),
                )
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
            if r + 1 < spinup_records or (r + 1 == spinup_records and not include_initial_state):
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
