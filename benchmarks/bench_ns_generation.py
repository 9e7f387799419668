"""Navier-Stokes generation speed: batched torch solver vs plain NumPy, one trajectory at a time.

Both run the same scheme (FNO's pseudo-spectral vorticity solver, see
``sdkd_pipeline.data.sources.navier_stokes``) for the same number of steps from the same GRF
initial states; the figure that matters is trajectories per second (per-trajectory cost), so
short horizons suffice. Timings are the best of ``--repeats`` runs (the machine may be shared).

    python benchmarks/bench_ns_generation.py                      # 64^2 and 256^2, ~1-2 min
    python benchmarks/bench_ns_generation.py --resolutions 64 --steps 400 --batch 96
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sdkd_pipeline.data.sources import navier_stokes as ns


def _best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_resolution(n: int, steps: int, batch: int, numpy_trajectories: int, args) -> dict:
    viscosity, dt = 1e-3, 1e-3
    dtype = torch.float32 if args.dtype == "float32" else torch.float64

    def numpy_run() -> None:
        for i in range(numpy_trajectories):
            w0 = ns.sample_initial_vorticity(n, [i], seed=0)[0]
            ns.simulate_vorticity_numpy(
                w0, viscosity=viscosity, dt=dt, n_records=1, steps_per_record=steps
            )

    solver = ns.VorticitySolver(
        n,
        viscosity=viscosity,
        dt=dt,
        device=args.device,
        dtype=dtype,
        layout=args.layout,
        compile=args.compile,
    )

    def torch_run() -> None:
        w0 = ns.sample_initial_vorticity(n, range(batch), seed=0)
        solver.simulate(w0, n_records=1, steps_per_record=steps)
        if solver.device.type == "cuda":
            torch.cuda.synchronize()

    solver.simulate(
        ns.sample_initial_vorticity(n, range(batch), seed=0), n_records=1, steps_per_record=2
    )  # warm-up: FFT plans, buffers, compilation
    t_numpy = _best_of(args.repeats, numpy_run)
    t_torch = _best_of(args.repeats, torch_run)
    return {
        "n": n,
        "steps": steps,
        "batch": batch,
        "numpy_traj_per_s": numpy_trajectories / t_numpy,
        "torch_traj_per_s": batch / t_torch,
        "numpy_ms_per_traj_step": 1e3 * t_numpy / (numpy_trajectories * steps),
        "torch_ms_per_traj_step": 1e3 * t_torch / (batch * steps),
        "layout": solver.layout,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[200, 20],
        help="steps per resolution (one value each, or one for all)",
    )
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[16, 8], help="torch batch size per resolution"
    )
    parser.add_argument("--numpy-trajectories", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--layout", default="auto", choices=["auto", "half", "packed"])
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    def per_resolution(values: list[int]) -> list[int]:
        return values * len(args.resolutions) if len(values) == 1 else values

    steps, batches = per_resolution(args.steps), per_resolution(args.batch)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, "
        f"torch dtype {args.dtype}; NumPy {np.__version__} (float64, one trajectory at a time)"
    )
    header = (
        f"{'grid':>7} {'steps':>6} {'batch':>6} {'layout':>7} | {'numpy traj/s':>13} "
        f"{'torch traj/s':>13} {'ratio':>7} | {'numpy ms/step':>13} {'torch ms/traj-step':>18}"
    )
    print(header)
    print("-" * len(header))
    for n, s, b in zip(args.resolutions, steps, batches, strict=True):
        r = bench_resolution(n, s, b, args.numpy_trajectories, args)
        ratio = r["torch_traj_per_s"] / r["numpy_traj_per_s"]
        print(
            f"{n:>4}^2 {s:>6} {b:>6} {r['layout']:>7} | {r['numpy_traj_per_s']:>13.3f} "
            f"{r['torch_traj_per_s']:>13.3f} {ratio:>6.2f}x | "
            f"{r['numpy_ms_per_traj_step']:>13.4f} {r['torch_ms_per_traj_step']:>18.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
