"""GPU check of the teachers (issue 3): train both on generated NS data and compare precisions.

Runs on a bare GPU machine (torch, numpy, xarray; no kedro, mlflow, zarr or dask):

    python benchmarks/gpu_teacher_check.py                 # paper-sized teachers, a few epochs
    python benchmarks/gpu_teacher_check.py --device cpu --trajectories 8 --epochs 1 --small

For each teacher and each setting (fp32 / bf16 autocast, channels_last off / on, batch sizes) it
prints training samples/s, peak GPU memory and the bf16 / fp32 speed ratio side by side.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from sdkd_pipeline.data.sources.navier_stokes import generate_navier_stokes
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.models import build_model
from sdkd_pipeline.training import TrainConfig, train

SMALL = {
    "st_alternet": {"hidden": 64, "depth": 4, "heads": 4, "frame_hidden": 8},
    "simvp": {"frame_hidden": 8, "hidden": 64, "depth": 4, "mlp_ratio": 4.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--small", action="store_true", help="laptop-sized teachers")
    args = parser.parse_args()

    t0 = time.perf_counter()
    raw = generate_navier_stokes(
        {"n_trajectories": args.trajectories, "t_final": 30.0, "device": args.device},
        progress=False,
    )
    tensors = build_tensor_dataset(
        raw, split=SplitConfig(train=0.75, val=0.125, test=0.125), window=WindowConfig(10, 10)
    )
    sets = {s: WindowDataset(tensors, s) for s in ("train", "val", "test")}
    print(
        f"data: {raw['fields'].shape} generated in {time.perf_counter() - t0:.1f} s; "
        f"{len(sets['train'])} training windows"
    )
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    header = (
        f"{'teacher':12} {'batch':>5} {'precision':>9} {'ch_last':>7} | "
        f"{'samples/s':>10} {'peak GiB':>8} {'val MSE':>8} {'bf16/fp32':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in ("st_alternet", "simvp"):
        for batch in args.batch_sizes:
            for channels_last in (False, True):
                speed = {}
                for precision in ("fp32", "bf16"):
                    if device.type != "cuda" and precision == "bf16":
                        continue
                    torch.manual_seed(0)
                    model = build_model(
                        name,
                        in_frames=10,
                        out_frames=10,
                        channels=1,
                        height=64,
                        width=64,
                        **(SMALL[name] if args.small else {}),
                    )
                    cfg = TrainConfig(
                        epochs=args.epochs,
                        batch_size=batch,
                        lr=1e-3,
                        device=str(device),
                        precision=precision,
                        channels_last=channels_last,
                        patience=None,
                        num_workers=2,
                    )
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    with tempfile.TemporaryDirectory() as out:
                        result = train(
                            model, sets["train"], sets["val"], cfg, out_dir=out, progress=False
                        )
                    peak = (
                        torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda"
                        else float("nan")
                    )
                    speed[precision] = result.samples_per_second
                    ratio = f"{speed['bf16'] / speed['fp32']:.2f}x" if precision == "bf16" else ""
                    print(
                        f"{name:12} {batch:>5} {precision:>9} {channels_last!s:>7} | "
                        f"{result.samples_per_second:>10.1f} {peak:>8.2f} "
                        f"{result.best_val_loss:>8.4f} {ratio:>9}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
