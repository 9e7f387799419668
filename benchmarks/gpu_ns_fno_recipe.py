"""Time FNO's exact nu = 1e-5 Navier-Stokes recipe on one GPU (and extrapolate a partial run).

The recipe: 1200 trajectories, solved at 256^2 with dt = 1e-4 for 20 time units (200,000
steps), recorded at 64^2 after every time unit. The run uses the project's generator
(``generate_navier_stokes``) unchanged, so the timing is that of the pipeline's own code. The
step is ``torch.compile``d by default: inductor fuses the elementwise work around the FFTs into
three kernels per step (pre-FFT derivative multipliers, the u.grad(w) product, the
Crank-Nicolson update), and all 1200 trajectories go in one batch (a few GB).

    # ~1 min of GPU time: 1 of the 20 time units, extrapolated to the full recipe
    python benchmarks/gpu_ns_fno_recipe.py --time-units 1
    # the whole thing, saving the fields
    python benchmarks/gpu_ns_fno_recipe.py --time-units 20 --save ns_V1e-5_N1200_T20.npz
    # CPU smoke test of the script itself
    python benchmarks/gpu_ns_fno_recipe.py --device cpu --trajectories 4 --resolution 32 \
        --record-resolution 16 --time-units 1 --compile off

Needs only torch, numpy and this package. Prints the measured rate, the extrapolated time of
the full recipe, and whether it fits ``--budget-minutes``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from sdkd_pipeline.data.sources import navier_stokes as ns


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(cfg: ns.NavierStokesConfig, batch: int, layout: str, steps: int) -> float:
    """Seconds per step for one batch (after a warm-up that triggers compilation)."""
    device = ns.resolve_device(cfg.device)
    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    solver = ns.VorticitySolver(
        cfg.resolution,
        viscosity=cfg.viscosity,
        dt=cfg.resolved_dt,
        device=device,
        dtype=dtype,
        compile=cfg.compile,
        layout=layout,
    )
    w0 = ns.sample_initial_vorticity(cfg.resolution, range(batch), seed=cfg.seed)
    state = solver.advance(solver.to_state(w0), 3)
    _sync(device)
    start = time.perf_counter()
    state = solver.advance(state, steps)
    _sync(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trajectories", type=int, default=1200)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--record-resolution", type=int, default=64)
    p.add_argument("--viscosity", type=float, default=1e-5)
    p.add_argument("--dt", type=float, default=1e-4)
    p.add_argument("--time-units", type=float, default=1.0, help="time units to actually run")
    p.add_argument("--full-time-units", type=float, default=20.0, help="the recipe's horizon")
    p.add_argument("--batch-size", type=int, default=0, help="0: all trajectories at once")
    p.add_argument("--layout", default="half", choices=["half", "packed", "auto"])
    p.add_argument("--compile", default="on", choices=["on", "off"])
    p.add_argument(
        "--autotune",
        action="store_true",
        help="time 50 steps for a few batch sizes and layouts first; use the best",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--downsample", default="spectral", choices=["spectral", "stride"])
    p.add_argument("--budget-minutes", type=float, default=15.0)
    p.add_argument("--save", default=None, help="write the fields to this .npz")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    device = ns.resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # no matmuls here; keep FP32 semantics
        print(f"device: {torch.cuda.get_device_name(device)}", flush=True)
    batch = args.batch_size or args.trajectories
    base = ns.NavierStokesConfig(
        n_trajectories=args.trajectories,
        resolution=args.resolution,
        record_resolution=args.record_resolution,
        viscosity=args.viscosity,
        dt=args.dt,
        t_final=args.time_units,
        record_every=1.0,
        seed=0,
        device=str(device),
        dtype=args.dtype,
        compile=args.compile == "on",
        layout=args.layout,
        downsample=args.downsample,
        batch_size=batch,
    ).validate()
    # The stability bound is checked for the full horizon, not just the part that runs.
    ns.NavierStokesConfig(**{**base.__dict__, "t_final": args.full_time_units}).validate()

    layout = args.layout
    if args.autotune:
        candidates = [
            b
            for b in (
                args.trajectories,
                args.trajectories // 2,
                args.trajectories // 4,
                args.trajectories // 8,
            )
            if b >= 1 and args.trajectories % b == 0
        ]
        results = []
        for lay in ("half", "packed"):
            for b in candidates:
                per_step = time_steps(base, b, lay, 50)
                rate = b / per_step
                results.append((rate, lay, b))
                print(
                    f"autotune: layout={lay:6s} batch={b:5d} {per_step * 1e3:8.3f} ms/step "
                    f"{rate:12.0f} traj-steps/s",
                    flush=True,
                )
        _, layout, batch = max(results)
        print(f"autotune: using layout={layout}, batch={batch}", flush=True)
    cfg = ns.NavierStokesConfig(**{**base.__dict__, "layout": layout, "batch_size": batch})

    # Warm-up (compilation, cuFFT plans) at the shapes of the run, timed on its own.
    start = time.perf_counter()
    time_steps(cfg, batch, layout, 2)
    setup_s = time.perf_counter() - start

    start = time.perf_counter()
    ds = ns.generate_navier_stokes(cfg, progress=not args.no_progress)
    _sync(device)
    run_s = time.perf_counter() - start
    steps = cfg.n_records * cfg.steps_per_record
    full_steps = round(args.full_time_units / cfg.resolved_dt)
    per_step_all = run_s / steps  # all trajectories advanced by one step
    estimate_s = per_step_all * full_steps + setup_s
    fields = ds["fields"].values
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "trajectories": args.trajectories,
        "resolution": args.resolution,
        "record_resolution": args.record_resolution,
        "dt": cfg.resolved_dt,
        "layout": layout,
        "batch": batch,
        "compile": cfg.compile,
        "time_units_run": args.time_units,
        "steps_run": steps,
        "run_seconds": run_s,
        "setup_seconds": setup_s,
        "ms_per_step_all_trajectories": 1e3 * per_step_all,
        "trajectory_steps_per_second": args.trajectories / per_step_all,
        "estimated_full_recipe_minutes": estimate_s / 60.0,
        "fits_budget": estimate_s / 60.0 <= args.budget_minutes,
        "max_abs_vorticity": float(np.abs(fields).max()),
        "rms_vorticity_last_frame": float(np.sqrt(np.mean(fields[:, -1] ** 2))),
        "max_stability_number": ds.attrs["max_stability_number"],
        "dropped_trajectories": ds.attrs["dropped_trajectories"],
    }
    print(json.dumps(report, indent=2), flush=True)
    print(
        f"FNO recipe ({args.full_time_units:g} time units, {full_steps} steps): estimated "
        f"{report['estimated_full_recipe_minutes']:.1f} min on {report['device']} "
        f"(budget {args.budget_minutes:g} min: {'OK' if report['fits_budget'] else 'OVER'})"
    )
    if args.save:
        np.savez(
            args.save,
            u=fields[:, :, 0],
            t=ds["time"].values,
            attrs=json.dumps({k: ds.attrs[k] for k in ds.attrs}),
        )
        print(f"saved {args.save}")
    return report


if __name__ == "__main__":
    main()
