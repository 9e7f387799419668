"""2-D incompressible Navier-Stokes (vorticity form) on the unit torus: FNO's generator, batched.

The package holds the source's two entry points, ``generate_navier_stokes`` (the
``navier_stokes.source.generate`` kind, defined here) and ``read_fno_mat`` (the ``fno_mat``
kind), and re-exports the public names of its modules: ``config`` (``NavierStokesConfig``, its
parsing and the a priori stability bound ``stable_dt``), ``spectral`` (grids, step operators,
the GRF initial state and the plain NumPy reference ``simulate_vorticity_numpy``), ``solver``
(the batched torch ``VorticitySolver``) and ``readers`` (FNO's ``.mat`` files).
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import xarray as xr

from sdkd_pipeline.data.cluster import sources_client
from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources.navier_stokes.config import (
    CHANNEL_LONG_NAMES,
    CHANNEL_UNITS,
    CHANNELS,
    DATASET_NAME,
    GENERATED_SOURCE,
    PARAM_PREFIX,
    RAW_DIR,
    RESOLVED_CUTOFF_SHARE,
    NavierStokesConfig,
    _as_config,
    stable_dt,
    velocity_bound,
)
from sdkd_pipeline.data.sources.navier_stokes.readers import read_fno_mat
from sdkd_pipeline.data.sources.navier_stokes.solver import RunDiagnostics, VorticitySolver
from sdkd_pipeline.data.sources.navier_stokes.spectral import (
    SpectralOperators,
    forcing_field,
    grf_expected_mean_square,
    grf_noise,
    grf_sqrt_eigenvalues,
    grid,
    sample_initial_vorticity,
    simulate_vorticity_numpy,
    spectral_operators,
    wavenumbers,
)
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

log = logging.getLogger(__name__)


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
    cfg: NavierStokesConfig | Mapping[str, Any],
    progress: bool = True,
    *,
    first_trajectory: int = 0,
) -> xr.Dataset:
    """Generate forced 2-D turbulence trajectories (FNO's recipe) as a raw dataset.

    ``first_trajectory`` numbers the trajectories from there: trajectory ``i``'s initial state
    depends on ``(seed, i)`` only, so ``first_trajectory=n`` gives trajectories that a dataset
    of ``n`` trajectories does not hold (function matching's fresh inputs).

    Returns ``fields`` (trajectory, time, channel=["vorticity"], y, x) at the record times
    (see ``NavierStokesConfig.record_times``) on the grid i / record_resolution, with every
    solver parameter in the attributes. When sources run on a Dask cluster
    (``data/cluster.py``) every batch of trajectories is a task there and ``fields`` is a dask
    array over the workers' results (the same values as here).
    """
    cfg = _as_config(cfg)
    device = resolve_device(cfg.device)
    dt = cfg.resolved_dt
    batch_size = cfg.batch_size or _default_batch_size(cfg, device)
    solver = _make_solver(cfg, device)
    m = cfg.record_resolution
    client = sources_client()
    started = _time.perf_counter()
    if client is not None:
        fields_out, blown_all, worst, device = _solve_on_cluster(
            client, cfg, batch_size, first_trajectory
        )
    else:
        fields_out, blown_all, worst = _solve_here(
            cfg, solver, batch_size, first_trajectory, device, progress
        )
    max_ratio, max_speed, max_cutoff = worst
    elapsed = _time.perf_counter() - started
    if max_cutoff > RESOLVED_CUTOFF_SHARE:
        log.warning(
            "%s: resolution check: up to %.2g of the enstrophy lies in the outer fifth of the "
            "dealiased shells of the %d^2 grid (resolved flows hold < %g there); the grid "
            "may not resolve viscosity=%g: raise resolution",
            PARAM_PREFIX,
            max_cutoff,
            cfg.resolution,
            RESOLVED_CUTOFF_SHARE,
            cfg.viscosity,
        )
    kept = np.flatnonzero(~blown_all)
    if kept.size == 0:
        raise ConfigError(
            f"{PARAM_PREFIX}.dt = {dt:g}: every trajectory blew up; reduce dt "
            f"(a priori bound {stable_dt(cfg):.3g})"
        )
    attrs = _generation_attrs(
        cfg,
        dt,
        solver,
        device=device,
        batch_size=batch_size,
        elapsed=elapsed,
        first_trajectory=first_trajectory,
        worst=(max_ratio, max_speed, max_cutoff),
        blown_all=blown_all,
    )
    return make_raw(
        fields_out if kept.size == blown_all.size else fields_out[kept],
        dataset=DATASET_NAME,
        source=GENERATED_SOURCE,
        channels=CHANNELS,
        time=cfg.record_times,
        y=grid(m),
        x=grid(m),
        attrs=attrs,
        long_names=CHANNEL_LONG_NAMES,
        units=CHANNEL_UNITS,
    )


def _make_solver(cfg: NavierStokesConfig, device: torch.device) -> VorticitySolver:
    return VorticitySolver(
        cfg.resolution,
        viscosity=cfg.viscosity,
        dt=cfg.resolved_dt,
        forcing_amplitude=cfg.forcing_amplitude,
        device=device,
        dtype=torch.float32 if cfg.dtype == "float32" else torch.float64,
        compile=cfg.compile,
        layout=cfg.layout,
    )


def _solve_here(
    cfg: NavierStokesConfig,
    solver: VorticitySolver,
    batch_size: int,
    first_trajectory: int,
    device: torch.device,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """All batches in this process, with a progress bar counting trajectory-steps."""
    from tqdm.auto import tqdm  # lazy: tqdm is only needed here

    n_steps = (cfg.spinup_records + cfg.n_records) * cfg.steps_per_record
    bar = tqdm(
        total=n_steps * cfg.n_trajectories,
        unit="traj-step",
        unit_scale=True,
        desc=f"navier_stokes {cfg.resolution}^2 on {device.type}",
        disable=None if progress else True,  # None: off when not a terminal
    )
    try:
        return _solve_in_batches(
            cfg, solver, cfg.resolved_dt, batch_size, first_trajectory, bar, progress
        )
    finally:
        bar.close()


def _solve_batch_task(
    cfg: NavierStokesConfig, idx: np.ndarray, first_trajectory: int, torch_threads: int
) -> tuple[np.ndarray, RunDiagnostics, str]:
    """One cluster task: a batch solved on the worker's device (resolved there), with the
    client's torch thread count: CPU FFTs and reductions split their work by thread, so the
    fields are bitwise those of the eager run only with the same count (a worker thread does
    not inherit the count that ``torch.set_num_threads`` set in the client's thread)."""
    device = resolve_device(cfg.device)
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        records, diag = _solve_batch(cfg, _make_solver(cfg, device), idx, first_trajectory)
    finally:
        torch.set_num_threads(before)
    return records, diag, str(device)


def _diagnostics_of(result: tuple) -> tuple[RunDiagnostics, str]:
    return result[1], result[2]


def _records_of(result: tuple) -> np.ndarray:
    return result[0]


def _solve_on_cluster(
    client: Any, cfg: NavierStokesConfig, batch_size: int, first_trajectory: int
) -> tuple[Any, np.ndarray, tuple[float, float, float], str]:
    """Every batch as a task on the cluster; only the diagnostics come back here. Returns the
    fields as a dask array over the tasks' records (which stay on the workers), the blown-up
    flags, the worst numbers and the device the workers used."""
    import dask
    import dask.array as da

    batches = _batches(cfg, batch_size)
    futures = [
        client.submit(
            _solve_batch_task, cfg, idx, first_trajectory, torch.get_num_threads(), pure=False
        )
        for idx in batches
    ]
    log.info(
        "%s: %d batch(es) of trajectories submitted to the cluster", PARAM_PREFIX, len(batches)
    )
    summaries = client.gather([client.submit(_diagnostics_of, f, pure=False) for f in futures])
    for idx, (diag, _) in zip(batches, summaries, strict=True):
        _check_blowup(cfg, cfg.resolved_dt, idx, diag)
    n_frames, m = cfg.n_records + int(cfg.include_initial_state), cfg.record_resolution
    parts = [
        da.from_delayed(
            dask.delayed(_records_of, pure=True)(f), (len(idx), n_frames, 1, m, m), np.float32
        )
        for f, idx in zip(futures, batches, strict=True)
    ]
    diags = [d for d, _ in summaries]
    worst = (
        max(d.max_rms_ratio for d in diags),
        max(d.max_speed for d in diags),
        max(d.max_cutoff_share for d in diags),
    )
    blown = np.concatenate([np.asarray(d.blown_up, dtype=bool) for d in diags])
    return da.concatenate(parts, axis=0), blown, worst, summaries[0][1]


def _solve_batch(
    cfg: NavierStokesConfig,
    solver: VorticitySolver,
    idx: np.ndarray,
    first_trajectory: int,
    progress: Any = None,
) -> tuple[np.ndarray, RunDiagnostics]:
    """Trajectories ``idx`` (numbered from ``first_trajectory``): their records as float32
    (batch, frame, 1, m, m) and the run's diagnostics."""
    w0 = sample_initial_vorticity(
        cfg.resolution,
        idx + int(first_trajectory),
        seed=cfg.seed,
        alpha=cfg.grf_alpha,
        tau=cfg.grf_tau,
        sigma=cfg.sigma,
    )
    records, diag = solver.simulate(
        w0,
        n_records=cfg.n_records,
        steps_per_record=cfg.steps_per_record,
        record_resolution=cfg.record_resolution,
        downsample=cfg.downsample,
        include_initial_state=cfg.include_initial_state,
        spinup_records=cfg.spinup_records,
        blowup_tolerance=cfg.blowup_tolerance,
        progress=progress,
    )
    return records.to("cpu", torch.float32).numpy()[:, :, None], diag


def _check_blowup(cfg: NavierStokesConfig, dt: float, idx: np.ndarray, diag: Any) -> None:
    """With ``on_blowup: raise``, a ``ConfigError`` for the first blown-up trajectory."""
    if np.any(diag.blown_up) and cfg.on_blowup == "raise":
        first = int(np.flatnonzero(diag.blown_up)[0])
        raise ConfigError(
            f"{PARAM_PREFIX}.dt = {dt:g}: trajectory {int(idx[first])} blew up at "
            f"t = {diag.blowup_time[first]:g} (vorticity non-finite or its rms above "
            f"{cfg.blowup_tolerance} x the enstrophy bound ||w0|| + t ||f||) with "
            f"viscosity={cfg.viscosity}, resolution={cfg.resolution}; reduce dt (a priori "
            f"bound {stable_dt(cfg):.3g}), or set on_blowup: drop to discard such "
            "trajectories"
        )


def _batches(cfg: NavierStokesConfig, batch_size: int) -> list[np.ndarray]:
    n = cfg.n_trajectories
    return [np.arange(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]


def _solve_in_batches(
    cfg: NavierStokesConfig,
    solver: VorticitySolver,
    dt: float,
    batch_size: int,
    first_trajectory: int,
    bar: Any,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Solve the trajectories ``batch_size`` at a time: the recorded fields, the blown-up
    flags and the worst (enstrophy-bound ratio, speed, cutoff share) over all batches."""
    n_frames = cfg.n_records + int(cfg.include_initial_state)
    m = cfg.record_resolution
    fields_out = np.empty((cfg.n_trajectories, n_frames, 1, m, m), dtype=np.float32)
    blown_all = np.zeros(cfg.n_trajectories, dtype=bool)
    max_ratio, max_speed, max_cutoff = 0.0, 0.0, 0.0
    for idx in _batches(cfg, batch_size):
        scaled_bar = _ScaledProgress(bar, len(idx)) if progress else None
        records, diag = _solve_batch(cfg, solver, idx, first_trajectory, scaled_bar)
        _check_blowup(cfg, dt, idx, diag)
        fields_out[idx] = records
        blown_all[idx] = diag.blown_up
        max_ratio = max(max_ratio, diag.max_rms_ratio)
        max_speed = max(max_speed, diag.max_speed)
        max_cutoff = max(max_cutoff, diag.max_cutoff_share)
    return fields_out, blown_all, (max_ratio, max_speed, max_cutoff)


def _generation_attrs(
    cfg: NavierStokesConfig,
    dt: float,
    solver: VorticitySolver,
    *,
    device: torch.device,
    batch_size: int,
    elapsed: float,
    first_trajectory: int,
    worst: tuple[float, float, float],
    blown_all: np.ndarray,
) -> dict[str, Any]:
    """Every solver parameter and what the run measured, as the raw dataset's attributes."""
    max_ratio, max_speed, max_cutoff = worst
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
    return attrs


class _ScaledProgress:
    """Counts trajectory-steps on a shared bar: one solver step advances ``batch`` of them."""

    def __init__(self, bar: Any, batch: int) -> None:
        self.bar, self.batch = bar, batch

    def update(self, steps: int) -> None:
        self.bar.update(steps * self.batch)


__all__ = [
    "CHANNELS",
    "CHANNEL_LONG_NAMES",
    "CHANNEL_UNITS",
    "DATASET_NAME",
    "GENERATED_SOURCE",
    "PARAM_PREFIX",
    "RAW_DIR",
    "RESOLVED_CUTOFF_SHARE",
    "NavierStokesConfig",
    "RunDiagnostics",
    "SpectralOperators",
    "VorticitySolver",
    "forcing_field",
    "generate_navier_stokes",
    "grf_expected_mean_square",
    "grf_noise",
    "grf_sqrt_eigenvalues",
    "grid",
    "read_fno_mat",
    "resolve_device",
    "sample_initial_vorticity",
    "simulate_vorticity_numpy",
    "spectral_operators",
    "stable_dt",
    "velocity_bound",
    "wavenumbers",
]
