"""Training engine throughput against a minimal plain-PyTorch loop, side by side in one run.

Both train the same model (same initial weights) on the same in-memory batches with the same
optimizer (Adam), batch size, precision and shuffling; the engine runs with progress bar and
tracker off but everything else on (schedule bookkeeping, running sums, validation, checkpoint
writes). Rounds alternate engine / plain loop so that load from other processes hits both.

Reported per round and as medians:
- train throughput (samples/s over the training batches only; the engine's own
  ``samples_per_second``, the plain loop timed the same way) and their ratio (target >= 0.95);
- end to end (whole ``train()`` call against the plain loop plus one validation pass and one
  ``torch.save`` per epoch), in wall and in process CPU time (on a machine shared with other work use ``--threads 1`` and
  many rounds: single rounds vary by +-30 % there).

    python benchmarks/bench_engine_throughput.py [--device auto] [--epochs 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sdkd_pipeline.training import TrainConfig, autocast_dtype, resolve_device, train


class ConvForecaster(nn.Module):
    """A small conv encoder-decoder (B, T_in, C, H, W) -> (B, T_out, C, H, W)."""

    def __init__(self, t_in: int, t_out: int, channels: int, width: int, depth: int) -> None:
        super().__init__()
        self.t_out, self.channels = t_out, channels
        layers: list[nn.Module] = [nn.Conv2d(t_in * channels, width, 3, padding=1), nn.GELU()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(4, width), nn.GELU()]
        layers.append(nn.Conv2d(width, t_out * channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        return self.net(x.reshape(b, t * c, h, w)).reshape(b, self.t_out, self.channels, h, w)


def plain_loop(
    model: nn.Module,
    train_set: TensorDataset,
    val_set: TensorDataset,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    dtype: torch.dtype | None,
    out: Path,
) -> tuple[float, float]:
    """The minimal loop; returns (train samples/s, end-to-end seconds)."""
    start = time.perf_counter()
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    val_loader = DataLoader(val_set, batch_size=batch_size)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    samples, seconds = 0, 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = F.mse_loss(model(x).float(), y)
            loss.backward()
            optimizer.step()
            samples += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        model.eval()
        with torch.no_grad(), autocast:
            val = sum(
                F.mse_loss(model(x.to(device)).float(), y.to(device), reduction="sum")
                for x, y in val_loader
            )
        model.train()
        torch.save({"model": model.state_dict(), "val": float(val)}, out / "plain.pt")
    return samples / seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = autocast_dtype(args.precision, device)
    t_in, t_out, channels, grid = 10, 10, 1, args.grid
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.n_train + 32, t_in, channels, grid, grid, generator=generator)
    y = torch.randn(args.n_train + 32, t_out, channels, grid, grid, generator=generator)
    train_set = TensorDataset(x[: args.n_train], y[: args.n_train])
    val_set = TensorDataset(x[args.n_train :], y[args.n_train :])
    torch.manual_seed(0)
    template = ConvForecaster(t_in, t_out, channels, args.width, args.depth)
    n_params = sum(p.numel() for p in template.parameters())
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
        f", {torch.get_num_threads()} threads), precision {args.precision}, model "
        f"{n_params / 1e3:.0f} k params, {args.n_train} samples of {t_in}x{channels}x{grid}x"
        f"{grid}, batch {args.batch_size}, {args.epochs} epochs x {args.rounds} rounds"
    )
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-4,
        seed=0,
        patience=None,
        device=str(device),
        precision=args.precision,
        resume=False,
    )

    # warm-up (allocator, kernels, thread pools) outside the measured rounds
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(
            copy.deepcopy(template),
            train_set,
            val_set,
            1,
            args.batch_size,
            1e-4,
            0,
            device,
            dtype,
            Path(tmp),
        )
    rows = []
    for round_index in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            # alternate who goes first, so a drift in machine load favours neither
            def run_engine() -> tuple[float, float, float]:
                t0, c0 = time.perf_counter(), time.process_time()
                result = train(
                    copy.deepcopy(template),
                    train_set,
                    val_set,
                    cfg,
                    out_dir=Path(tmp) / "engine",
                    progress=False,
                )
                return (
                    result.samples_per_second,
                    time.perf_counter() - t0,
                    time.process_time() - c0,
                )

            def run_plain() -> tuple[float, float, float]:
                c0 = time.process_time()
                rate, wall = plain_loop(
                    copy.deepcopy(template),
                    train_set,
                    val_set,
                    args.epochs,
                    args.batch_size,
                    1e-4,
                    0,
                    device,
                    dtype,
                    Path(tmp),
                )
                return rate, wall, time.process_time() - c0

            if round_index % 2 == 0:
                (engine_rate, engine_wall, engine_cpu), (plain_rate, plain_wall, plain_cpu) = (
                    run_engine(),
                    run_plain(),
                )
            else:
                (plain_rate, plain_wall, plain_cpu), (engine_rate, engine_wall, engine_cpu) = (
                    run_plain(),
                    run_engine(),
                )
        rows.append((engine_rate, plain_rate, engine_wall, plain_wall, engine_cpu, plain_cpu))
        print(
            f"round {round_index + 1}: engine {engine_rate:8.1f} samples/s, "
            f"plain {plain_rate:8.1f} samples/s, ratio {engine_rate / plain_rate:.3f}"
            f"; end to end {engine_wall:.2f} s vs {plain_wall:.2f} s wall, "
            f"{engine_cpu:.2f} s vs {plain_cpu:.2f} s CPU"
        )
    engine_rate = statistics.median(r[0] for r in rows)
    plain_rate = statistics.median(r[1] for r in rows)
    ratios = [r[0] / r[1] for r in rows]
    wall_ratios = [r[3] / r[2] for r in rows]
    print(
        f"median train throughput: engine {engine_rate:.1f} samples/s, plain loop "
        f"{plain_rate:.1f} samples/s; ratio engine/plain median {statistics.median(ratios):.3f}"
        f" (min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.95)"
    )
    cpu_ratios = [r[5] / r[4] for r in rows]
    print(
        f"median end-to-end speed ratio (plain time / engine time, incl. validation and "
        f"checkpoints): wall {statistics.median(wall_ratios):.3f}, CPU time "
        f"{statistics.median(cpu_ratios):.3f} (CPU time leaves out waiting for other processes, "
        f"not cache or SMT contention: on a shared machine trust medians over many rounds)"
    )


if __name__ == "__main__":
    main()
