"""Teacher vs student inference latency, with parameters and FLOPs, side by side.

Builds every registered model at its default (paper-like) config for one grid (NS by default:
10 -> 10 frames, 1 channel, 64x64), then times ``model(x)`` under ``torch.inference_mode`` at
each batch size, on each device (CPU, and CUDA when present), in each execution mode:

- eager: plain PyTorch;
- compile: ``torch.compile(model)`` (Inductor; needs a C++ compiler on CPU);
- cudagraphs (CUDA only): ``torch.compile(model, mode="reduce-overhead")``, which replays the
  whole forward as one CUDA graph, removing per-kernel launch cost (what bounds small nets at
  batch 1).

Latency is the median over repeated calls after warm-up (at least ``--min-repeats`` calls and
``--min-time`` seconds). The models of one (device, mode, batch) are timed in interleaved
rounds, so background load on a shared machine hits teachers and students alike. Prints a table
of params, GFLOPs per sample and latency, then each student's speedup over each teacher, and
the best deployable mode per model (the lowest latency over modes).

    python benchmarks/bench_inference_latency.py [--devices cpu cuda] [--batch-sizes 1 32]
        [--modes eager compile cudagraphs] [--threads N] [--grid 64 64] [--frames 10 10]
        [--channels 1] [--set st_alternet.hidden=64 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from sdkd_pipeline.models import MODEL_ROLES, build_model, count_flops, count_parameters


def _parse_overrides(items: list[str]) -> dict[str, dict[str, object]]:
    overrides: dict[str, dict[str, object]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        name, _, param = key.partition(".")
        if not raw or not param:
            raise SystemExit(f"--set expects model.param=value, got {item!r}")
        value: object
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
        overrides.setdefault(name, {})[param] = value
    return overrides


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(model: torch.nn.Module, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if mode == "eager":
        return model
    if mode == "compile":
        return torch.compile(model)
    if mode == "cudagraphs":
        return torch.compile(model, mode="reduce-overhead")
    raise SystemExit(f"unknown mode {mode!r}")


def _time_round(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device, calls: int
) -> list[float]:
    times = []
    for _ in range(calls):
        _synchronize(device)
        start = time.perf_counter()
        fn(x)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure(
    models: dict[str, torch.nn.Module],
    x: torch.Tensor,
    device: torch.device,
    mode: str,
    min_repeats: int,
    min_time: float,
) -> dict[str, float]:
    """Median latency (s) of each model on ``x``; models interleaved round by round."""
    prepared = {}
    for name, model in models.items():
        fn = _prepare(model, mode)
        with torch.inference_mode():
            warm_start = time.perf_counter()
            for _ in range(3):  # compile, record CUDA graphs, warm caches
                fn(x)
            _synchronize(device)
        print(f"    {name}: warm-up {time.perf_counter() - warm_start:.1f} s", flush=True)
        prepared[name] = fn
    samples: dict[str, list[float]] = {name: [] for name in models}
    start = time.perf_counter()
    with torch.inference_mode():
        while (
            min(len(s) for s in samples.values()) < min_repeats
            or time.perf_counter() - start < min_time
        ):
            for name, fn in prepared.items():
                samples[name].extend(_time_round(fn, x, device, 2))
            if time.perf_counter() - start > 20 * max(min_time, 1.0):
                break  # a slow teacher at batch 32: enough
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="cpu and/or cuda (default: cpu, plus cuda when present)",
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        help="eager compile cudagraphs (default: all that apply)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODEL_ROLES))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument("--grid", nargs=2, type=int, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--frames", nargs=2, type=int, default=[10, 10], metavar=("T_IN", "T_OUT"))
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--min-repeats", type=int, default=10)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        help="config overrides, e.g. st_alternet.hidden=64",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    overrides = _parse_overrides(args.overrides)
    (height, width), (t_in, t_out) = args.grid, args.frames
    shape = {
        "in_frames": t_in,
        "out_frames": t_out,
        "channels": args.channels,
        "height": height,
        "width": width,
    }
    torch.manual_seed(0)
    cpu_models = {
        name: build_model(name, **shape, **overrides.get(name, {})).eval() for name in args.models
    }
    params = {name: count_parameters(m) for name, m in cpu_models.items()}
    flops = {
        name: count_flops(m, (t_in, args.channels, height, width)) for name, m in cpu_models.items()
    }
    print(
        f"grid {height}x{width}, {t_in} -> {t_out} frames, {args.channels} channel(s); "
        f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}"
    )

    latency: dict[tuple[str, str, int], dict[str, float]] = {}
    for device_name in devices:
        device = torch.device(device_name)
        modes = args.modes or (
            ["eager", "compile", "cudagraphs"] if device.type == "cuda" else ["eager", "compile"]
        )
        models = {name: m.to(device) for name, m in cpu_models.items()}
        for mode in modes:
            if mode == "cudagraphs" and device.type != "cuda":
                continue
            for batch in args.batch_sizes:
                print(f"  timing {device_name} {mode} batch {batch} ...", flush=True)
                torch._dynamo.reset()
                x = torch.randn(batch, t_in, args.channels, height, width, device=device)
                latency[(device_name, mode, batch)] = measure(
                    models, x, device, mode, args.min_repeats, args.min_time
                )
        cpu_models = {name: m.cpu() for name, m in models.items()}

    keys = list(latency)
    header = f"{'model':<12} {'role':<8} {'params':>10} {'GFLOP/sample':>13}"
    for device_name, mode, batch in keys:
        header += f" {f'{device_name} {mode} b{batch} ms':>24}"
    print("\nLatency per call (median), milliseconds")
    print(header)
    for name in args.models:
        row = f"{name:<12} {MODEL_ROLES[name]:<8} {params[name]:>10,} {flops[name] / 1e9:>13.3f}"
        for key in keys:
            row += f" {latency[key][name] * 1e3:>24.2f}"
        print(row)

    teachers = [n for n in args.models if MODEL_ROLES[n] == "teacher"]
    students = [n for n in args.models if MODEL_ROLES[n] == "student"]
    print("\nSpeedup of each student over each teacher (teacher latency / student latency)")
    header = f"{'student / teacher':<26}"
    for device_name, mode, batch in keys:
        header += f" {f'{device_name} {mode} b{batch}':>24}"
    print(header)
    for student in students:
        for teacher in teachers:
            row = f"{f'{student} / {teacher}':<26}"
            for key in keys:
                row += f" {latency[key][teacher] / latency[key][student]:>23.2f}x"
            print(row)

    print("\nBest deployable mode per device and batch (lowest latency over modes)")
    for device_name in devices:
        for batch in args.batch_sizes:
            best = {}
            for name in args.models:
                options = {
                    mode: latency[(d, mode, b)][name]
                    for (d, mode, b) in keys
                    if d == device_name and b == batch
                }
                mode = min(options, key=options.get)
                best[name] = (options[mode], mode)
            parts = [f"{n} {best[n][0] * 1e3:.2f} ms ({best[n][1]})" for n in args.models]
            print(f"  {device_name} b{batch}: " + "; ".join(parts))
            for student in students:
                worst = min(best[t][0] / best[student][0] for t in teachers) if teachers else 0
                print(f"    {student}: >= {worst:.2f}x faster than every teacher")


if __name__ == "__main__":
    main()
