"""The distributed context and the data loading.

When started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, world
size > 1) the engine initialises the process group (NCCL on CUDA, gloo on CPU, ``_setup_distributed``),
shards the training set with ``DistributedSampler`` (``_EpochSampler``: the shuffling of epoch
``e`` is a function of ``(seed, e)`` alone, and a resumed run skips the batches already done),
wraps the model in ``DistributedDataParallel``, all-reduces the validation and test errors
(exact sums, no padding), and lets rank 0 alone write checkpoints and log to the tracker; all
ranks take the same early-stopping decision. ``_make_loader`` builds the DataLoaders, with
worker seeding derived from the loader's generator."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sdkd_pipeline.training.config import TrainConfig


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        tensor = torch.tensor([1 if flag else 0], device=device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def distributed_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by torchrun with several processes."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return rank, world, int(os.environ.get("LOCAL_RANK", rank))
    if not {"RANK", "WORLD_SIZE"} <= set(os.environ):
        return None
    world = int(os.environ["WORLD_SIZE"])
    if world <= 1:
        return None
    rank = int(os.environ["RANK"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def _setup_distributed(device: torch.device) -> _Dist:
    env = distributed_env()
    if env is None:
        return _Dist()
    rank, world, local_rank = env
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        initialized_here = True
    return _Dist(rank, world, local_rank, initialized_here)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _EpochSampler(Sampler[int]):
    """This rank's indices for one epoch, a window ``[start, stop)`` of its batches.

    The order comes from ``DistributedSampler`` (shuffled by ``seed + epoch``, the same on every
    rank, padded so that ranks get equal counts); ``start`` skips the batches a resumed run has
    already trained on, ``stop`` applies ``max_batches_per_epoch``.
    """

    def __init__(
        self, dataset: Dataset, dist_ctx: _Dist, seed: int, batch_size: int, max_batches: int | None
    ) -> None:
        self.inner = DistributedSampler(
            dataset,
            num_replicas=dist_ctx.world_size,
            rank=dist_ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = batch_size
        full = math.ceil(len(self.inner) / batch_size)
        self.batches_per_epoch = full if max_batches is None else min(full, max_batches)
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start_batch = start_batch

    def _window(self) -> tuple[int, int]:
        stop = min(len(self.inner), self.batches_per_epoch * self.batch_size)
        return min(self.start_batch * self.batch_size, stop), stop

    def __iter__(self) -> Iterator[int]:
        start, stop = self._window()
        return iter(list(self.inner)[start:stop])

    def __len__(self) -> int:
        start, stop = self._window()
        return stop - start


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive NumPy's and Python's from it
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _make_loader(
    dataset: Dataset,
    sampler: Sampler[int] | list[int],
    batch_size: int,
    cfg: TrainConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=False,  # the last partial batch is trained on (skipping it is a known peer bug)
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.persistent_workers and workers > 0,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=generator,
    )
