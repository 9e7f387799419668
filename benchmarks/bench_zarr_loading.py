"""Throughput of training windows read from the Zarr store vs the same windows from memory.

Builds a store shaped like the default Navier-Stokes one (48 trajectories x 30 frames x 64x64,
10 -> 10, stride 1) in a temporary directory (``--layout series``: one long 32x64 series like
WeatherBench, 12 -> 12), then times epochs over the training split through a training-like
DataLoader (2 workers, batch 32, persistent workers) for:

- memory (numpy baseline): a plain Dataset slicing the same windows out of a numpy array,
  shuffled;
- zarr (cache N MB): ``WindowDataset(path, "train", cache_mb=N)``, shuffled (the default use);
- zarr (no cache): ``cache_mb=0``, every window read from disk again, shuffled;
- zarr + pools: the cached dataset with ``ChunkPoolSampler`` instead of a full shuffle.

Epoch 1 includes the workers' first reads (cold cache); later epochs show the steady state
(median). Epochs of the loaders interleave so that other load on a shared machine hits all of
them alike. Prints samples/s and the ratio to the in-memory baseline side by side.

    python benchmarks/bench_zarr_loading.py [--layout ns|series] [--cache-mb 256]
        [--compressor none|blosc-lz4|zstd] [--chunk-time N] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.store import write_store
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import ChunkPoolSampler, WindowDataset


class InMemoryWindows(Dataset):
    """The baseline: the same (trajectory, t_start) windows sliced from a numpy array."""

    def __init__(self, fields: np.ndarray, windows: np.ndarray, t_in: int, t_out: int) -> None:
        self.fields, self.windows, self.t_in, self.t_out = fields, windows, t_in, t_out

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        traj, t0 = self.windows[index]
        block = self.fields[traj, t0 : t0 + self.t_in + self.t_out]
        return (
            torch.from_numpy(block[: self.t_in].copy()),
            torch.from_numpy(block[self.t_in :].copy()),
        )


def smooth_fields(n_traj: int, n_time: int, n_y: int, n_x: int, seed: int = 0) -> np.ndarray:
    """Random fields with a k^-2 amplitude spectrum (compresses like real vorticity)."""
    rng = np.random.default_rng(seed)
    kk = np.hypot(np.fft.fftfreq(n_y)[:, None] * n_y, np.fft.fftfreq(n_x)[None, :] * n_x)
    kk[0, 0] = 1.0
    out = np.empty((n_traj, n_time, 1, n_y, n_x), dtype=np.float32)
    for i in range(n_traj):
        for t0 in range(0, n_time, 500):
            shape = (min(500, n_time - t0), 1, n_y, n_x)
            noise = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            out[i, t0 : t0 + shape[0]] = np.fft.ifft2(noise * kk**-2).real
    return out


def time_epochs(
    datasets: dict[str, tuple[Dataset, Sampler | None]], epochs: int, workers: int, batch: int
) -> dict[str, list[float]]:
    """Samples/s per epoch; epochs of the different loaders interleave, so that load from
    other processes on a shared machine affects all of them alike."""
    loaders = {
        name: DataLoader(
            ds,
            batch_size=batch,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0),
        )
        for name, (ds, sampler) in datasets.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(epochs):
        for name, loader in loaders.items():
            start, n = time.perf_counter(), 0
            for x, _y in loader:
                n += x.shape[0]
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--layout",
        choices=["ns", "series"],
        default="ns",
        help="ns: trajectories of 64x64 vorticity, 10 -> 10 (default); series: "
        "one long 32x64 series like WeatherBench, 12 -> 12",
    )
    parser.add_argument("--trajectories", type=int, default=48)
    parser.add_argument("--frames", type=int, default=None, help="ns: 30, series: 6000")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--compressor", default="none", choices=["none", "blosc-lz4", "zstd"])
    parser.add_argument("--chunk-time", type=int, default=None)
    parser.add_argument("--cache-mb", type=float, default=256.0)
    args = parser.parse_args()

    if args.layout == "ns":
        frames = args.frames or 30
        fields = smooth_fields(args.trajectories, frames, 64, 64)
        window, split = WindowConfig(10, 10, 1), SplitConfig(0.75, 0.125, 0.125)
    else:
        frames = args.frames or 6000
        fields = smooth_fields(1, frames, 32, 64)
        window, split = WindowConfig(12, 12, 1), SplitConfig(0.7, 0.1, 0.2)
    raw = make_raw(
        fields,
        dataset="bench",
        source="generated:benchmark",
        channels=["field"],
        time=np.arange(frames, dtype=np.float64),
    )
    tensors = build_tensor_dataset(raw, split=split, window=window, chunk_time=args.chunk_time)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        start = time.perf_counter()
        write_store(tensors, path, compressor=args.compressor)
        write_s = time.perf_counter() - start
        zarr_ds = WindowDataset(path, "train", cache_mb=args.cache_mb)
        memory = InMemoryWindows(
            np.ascontiguousarray(tensors["fields"].values),
            zarr_ds.windows,
            window.t_in,
            window.t_out,
        )
        store_mb = tensors["fields"].nbytes / 1024**2
        print(
            f"store: {tuple(tensors['fields'].shape)} ({store_mb:.0f} MB), chunks "
            f"{tuple(c[0] for c in tensors['fields'].chunks)}, compressor {args.compressor}, "
            f"written in {write_s:.2f} s; train windows: {len(zarr_ds)} of "
            f"{window.t_in}+{window.t_out} frames; DataLoader: {args.workers} workers, batch "
            f"{args.batch}, {args.epochs} epochs; machine: {os.cpu_count()} cores (shared)"
        )
        runs: dict[str, tuple[Dataset, Sampler | None]] = {
            "memory (numpy baseline)": (memory, None),
            f"zarr (cache {args.cache_mb:g} MB)": (zarr_ds, None),
            "zarr (no cache)": (WindowDataset(path, "train", cache_mb=0), None),
            f"zarr (cache {args.cache_mb:g} MB) + pools": (zarr_ds, ChunkPoolSampler(zarr_ds)),
        }
        results = time_epochs(runs, args.epochs, args.workers, args.batch)
    base = results["memory (numpy baseline)"]
    base_first, base_steady = base[0], float(np.median(base[1:] or base))
    print(
        f"{'loader':34s} {'epoch 1 samples/s':>18s} {'ratio':>6s} "
        f"{'median later epochs':>20s} {'ratio':>6s}"
    )
    for name, rates in results.items():
        first, steady = rates[0], float(np.median(rates[1:] or rates))
        print(
            f"{name:34s} {first:18.0f} {first / base_first:6.2f} "
            f"{steady:20.0f} {steady / base_steady:6.2f}"
        )


if __name__ == "__main__":
    main()
