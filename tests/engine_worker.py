"""A tiny forecaster, synthetic windows, and a command-line training run for the engine tests.

Run as a script (a subprocess of the tests, or under torchrun for the DDP test):

    python tests/engine_worker.py OUT_DIR [--epochs N] [--kill-after-items K] [--record-writes]

``--kill-after-items`` makes the dataset SIGKILL its own process when it is asked for its K-th
item, i.e. in the middle of an epoch, with no chance to clean up (what the resume test needs).
``--record-writes`` logs every checkpoint write and tracker call of this rank to files, so the
DDP test can check that rank 0 alone writes and logs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

T_IN, T_OUT, CHANNELS, HEIGHT, WIDTH = 3, 2, 2, 8, 8


class TinyForecaster(nn.Module):
    """(B, T_in, C, H, W) -> (B, T_out, C, H, W) with a conv, a dropout (RNG) and a conv."""

    def __init__(
        self,
        t_in: int = T_IN,
        t_out: int = T_OUT,
        channels: int = CHANNELS,
        width: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.t_out, self.channels = t_out, channels
        self.net = nn.Sequential(
            nn.Conv2d(t_in * channels, width, 3, padding=1),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv2d(width, t_out * channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        out = self.net(x.reshape(b, t * c, h, w))
        return out.reshape(b, self.t_out, self.channels, h, w)


class SyntheticWindows(torch.utils.data.Dataset):
    """Random inputs; targets a fixed smooth function of them (learnable by TinyForecaster)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, T_IN, CHANNELS, HEIGHT, WIDTH, generator=generator)
        mean_in = self.x.mean(dim=1, keepdim=True)
        shifted = torch.roll(mean_in, shifts=1, dims=-1)
        self.y = torch.cat([0.5 * mean_in + 0.5 * shifted, shifted], dim=1)[:, :T_OUT]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


class KillingDataset(torch.utils.data.Dataset):
    """Wraps a dataset and SIGKILLs the process on the ``kill_after``-th item read."""

    def __init__(self, inner: torch.utils.data.Dataset, kill_after: int) -> None:
        self.inner, self.kill_after, self.reads = inner, kill_after, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        if self.reads >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner[index]


class FileRecordingTracker:
    """A Tracker appending one JSON line per call to ``path`` (created on the first call)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _record(self, method: str, **payload: Any) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"method": method, **payload}, default=str) + "\n")

    def log_params(self, params: dict) -> None:
        self._record("log_params", params=params)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._record("log_metrics", metrics=metrics, step=step)

    def set_tags(self, tags: dict) -> None:
        self._record("set_tags", tags=tags)

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        self._record("log_artifact", path=str(path))

    def log_dict(self, data: dict, name: str) -> None:
        self._record("log_dict", name=name)

    def log_figure(self, figure: Any, name: str) -> None:
        self._record("log_figure", name=name)

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    from sdkd_pipeline import training

    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=22)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--checkpoint-every-steps", type=int, default=2)
    parser.add_argument("--kill-after-items", type=int, default=None)
    parser.add_argument("--record-writes", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    records = args.out_dir.parent / f"{args.out_dir.name}-records"
    records.mkdir(parents=True, exist_ok=True)

    tracker = None
    if args.record_writes:
        original_save = training.engine._atomic_torch_save

        def recording_save(obj: Any, path: Path) -> None:
            with open(records / f"writes_rank{rank}.txt", "a") as handle:
                handle.write(f"{path}\n")
            original_save(obj, path)

        training.engine._atomic_torch_save = recording_save
        tracker = FileRecordingTracker(records / f"tracker_rank{rank}.jsonl")

    torch.manual_seed(1234)  # model initialisation, identical in every process
    model = TinyForecaster()
    train_set: torch.utils.data.Dataset = SyntheticWindows(args.n_train, seed=1)
    if args.kill_after_items is not None:
        train_set = KillingDataset(train_set, args.kill_after_items)
    cfg = training.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=3e-3,
        seed=7,
        patience=None,
        checkpoint_every_steps=args.checkpoint_every_steps,
        schedule="cosine",
        warmup_steps=2,
        grad_clip=1.0,
    )
    result = training.train(
        model,
        train_set,
        SyntheticWindows(9, seed=2),
        cfg,
        out_dir=args.out_dir,
        test_set=SyntheticWindows(5, seed=3),
        tracker=tracker,
        progress=False,
    )
    torch.save(model.state_dict(), records / f"final_model_rank{rank}.pt")
    summary = {
        "best_val_loss": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "test_loss": result.test_loss,
        "resumed_from_epoch": result.resumed_from_epoch,
        "history": [{k: v for k, v in row.items() if k != "time_s"} for row in result.history],
    }
    (records / f"result_rank{rank}.json").write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
