"""Rayleigh-Benard convection: a built-in free-slip solver, The Well's HDF5 reader and downloader.

The package holds the source's entry points, defined here: ``generate_rayleigh_benard_free_slip``
(the ``rayleigh_benard.source.generate_free_slip`` kind), ``download_the_well_rbc`` (the
``rayleigh_benard.download.the_well`` step) and ``main``, the download command line
(``python -m sdkd_pipeline.data.sources.rayleigh_benard``, through ``__main__``); and it
re-exports the public names of its modules: ``config`` (``FreeSlipRBCConfig`` and its
parsing), ``solver`` (the batched ``FreeSlipBoussinesqSolver``, the linear growth rate and the
initial temperature noise) and ``readers`` (The Well's file names, URLs and
``read_the_well_rbc``, the ``the_well`` kind).
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.sources.rayleigh_benard.config import (
    CHANNEL_LONG_NAMES,
    CHANNEL_UNITS,
    CHANNELS,
    DATASET_NAME,
    DEFAULT_PARAM_PREFIX,
    FREE_SLIP_SOURCE,
    RAW_DIR,
    THE_WELL_PARAM_PREFIX,
    FreeSlipRBCConfig,
    describe_vertical_grid,
)
from sdkd_pipeline.data.sources.rayleigh_benard.readers import (
    THE_WELL_BASE_URL,
    THE_WELL_RBC_FIELDS,
    THE_WELL_RBC_PRANDTL,
    THE_WELL_RBC_RAYLEIGH,
    THE_WELL_SPLITS,
    read_the_well_rbc,
    the_well_rbc_file_names,
    the_well_rbc_urls,
)
from sdkd_pipeline.data.sources.rayleigh_benard.solver import (
    FREE_SLIP_CRITICAL_RAYLEIGH,
    FREE_SLIP_CRITICAL_WAVENUMBER,
    FreeSlipBlowUpError,
    FreeSlipBoussinesqSolver,
    _initial_theta,
    free_slip_growth_rate,
    initial_theta,
)
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError


def generate_rayleigh_benard_free_slip(
    cfg: FreeSlipRBCConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    *,
    initial_theta: np.ndarray | None = None,
    param_path: str = DEFAULT_PARAM_PREFIX,
) -> xr.Dataset:
    """Simulate free-slip Rayleigh-Benard convection and return it as a raw dataset.

    ``cfg`` is a ``FreeSlipRBCConfig`` or a parameters mapping (validated, errors name
    ``<param_path>.<field>``). ``initial_theta`` (n_trajectories, nz, nx) replaces the random initial
    temperature perturbation (used by tests, e.g. a single linear mode).

    Channels, in the order of ``CHANNELS`` (shared with The Well's reader): buoyancy
    (= T = 1 - z + theta), velocity_x, velocity_y (vertical), and pressure when
    ``include_pressure``. Dims (trajectory, time, channel, y=z, x); time is the physical
    time from the start of the run (the first ``t_spinup`` units are not recorded).
    Raises ``FreeSlipBlowUpError`` (a ``ConfigError``) if the solution becomes non-finite.
    """
    if cfg is None or isinstance(cfg, Mapping):
        cfg = FreeSlipRBCConfig.from_params(cfg, param_path)
    else:
        cfg.validate(param_path)
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
    solver.set_state(_initial_state(cfg, initial_theta, param_path))

    channels = [c for c in CHANNELS if c != "pressure" or cfg.include_pressure]
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
                    f"{param_path}.nx/nz, or lower {param_path}.dt/cfl or {param_path}.rayleigh"
                )
            out[:, i] = frame_np
            if bar is not None:
                bar.update(1)
                bar.set_postfix(t=f"{t_rec:.2f}", steps=solver.n_steps)
    finally:
        if bar is not None:
            bar.close()
    elapsed = _time.perf_counter() - started

    attrs = _free_slip_attrs(cfg, solver, device, elapsed)
    return make_raw(
        out,
        dataset=DATASET_NAME,
        source=FREE_SLIP_SOURCE,
        channels=channels,
        time=times.astype(np.float64),
        y=solver.z.astype(np.float64),
        x=solver.x.astype(np.float64),
        attrs=attrs,
        long_names=CHANNEL_LONG_NAMES,
        units=CHANNEL_UNITS,
    )


def _initial_state(
    cfg: FreeSlipRBCConfig, initial_theta: np.ndarray | None, param_path: str
) -> np.ndarray:
    """The initial temperature perturbation: the seeded noise, or ``initial_theta`` checked
    against the grid."""
    if initial_theta is None:
        theta0 = _initial_theta(cfg, cfg.nz, cfg.nx)
    else:
        theta0 = np.asarray(initial_theta, dtype=np.float64)
        expected = (cfg.n_trajectories, cfg.nz, cfg.nx)
        if theta0.shape != expected:
            raise ConfigError(
                f"{param_path}: initial_theta has shape {theta0.shape}, expected {expected} "
                "(n_trajectories, nz, nx)"
            )
    return theta0


def _free_slip_attrs(
    cfg: FreeSlipRBCConfig,
    solver: FreeSlipBoussinesqSolver,
    device: torch.device,
    elapsed: float,
) -> dict[str, Any]:
    """Every solver parameter and what the run used, as the raw dataset's attributes."""
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
            "grid_y": describe_vertical_grid(solver.z) + ": cell centres z_j = (j + 1/2) / nz",
            "viscosity": solver.nu,
            "diffusivity": solver.kappa,
            "n_solver_steps": int(solver.n_steps),
            "device": str(device),
            "wall_time_s": round(elapsed, 3),
        }
    )
    return attrs


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


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


__all__ = [
    "CHANNELS",
    "CHANNEL_LONG_NAMES",
    "CHANNEL_UNITS",
    "DATASET_NAME",
    "DEFAULT_PARAM_PREFIX",
    "FREE_SLIP_CRITICAL_RAYLEIGH",
    "FREE_SLIP_CRITICAL_WAVENUMBER",
    "FREE_SLIP_SOURCE",
    "RAW_DIR",
    "THE_WELL_BASE_URL",
    "THE_WELL_PARAM_PREFIX",
    "THE_WELL_RBC_FIELDS",
    "THE_WELL_RBC_PRANDTL",
    "THE_WELL_RBC_RAYLEIGH",
    "THE_WELL_SPLITS",
    "FreeSlipBlowUpError",
    "FreeSlipBoussinesqSolver",
    "FreeSlipRBCConfig",
    "download_the_well_rbc",
    "free_slip_growth_rate",
    "generate_rayleigh_benard_free_slip",
    "initial_theta",
    "main",
    "read_the_well_rbc",
    "the_well_rbc_file_names",
    "the_well_rbc_urls",
]
