"""The one training engine: teachers and students, plain training and distillation alike.

``train(model, train_set, val_set, cfg, out_dir=...)`` runs Adam on a pluggable loss, validates
with the plain MSE of ``model(x)`` against ``y`` (normalized units), stops early on the
validation loss, and keeps two checkpoints in ``out_dir``:

- ``best.pt``: the model weights of the best validation epoch, that epoch, its validation loss
  and the training config;
- ``last.pt``: everything needed to continue exactly where the run stopped: model, optimizer,
  learning-rate schedule, the loss's own state (e.g. a distillation projector), epoch and step,
  best-so-far, early-stopping counter, history, and the RNG states (torch, CUDA, NumPy, Python)
  of every process.

Both are written atomically (temporary file + ``os.replace``) and hold only tensors, plain
containers, numbers and strings, so they load with ``torch.load(..., weights_only=True)``.
A run killed at any point (even SIGKILL) resumes from ``last.pt`` when ``train`` is called again
with the same ``out_dir`` and config, and ends bit-identical on CPU to an uninterrupted run: the
shuffling of epoch ``e`` is a function of ``(seed, e)`` alone (``DistributedSampler`` with
``set_epoch``), and a mid-epoch checkpoint (``checkpoint_every_steps``) records how many batches
of that epoch are done, so the resumed run skips them without reading them. Resuming with a
different config is an error (``ConfigError`` naming the keys) rather than a silent fresh start
that would overwrite the old run; ``resume: false`` starts afresh on purpose.

Distillation plugs in as a loss (see ``TrainingLoss``), not as a second loop.

When started by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, world
size > 1) the engine initialises the process group (NCCL on CUDA, gloo on CPU), shards the
training set with ``DistributedSampler``, wraps the model in ``DistributedDataParallel``,
all-reduces the validation and test errors (exact sums, no padding), and lets rank 0 alone write
checkpoints and log to the tracker; all ranks take the same early-stopping decision.

This module imports without Kedro, MLflow, Zarr or Dask; tqdm is optional (no progress bar
without it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from sdkd_pipeline.config_utils import known_keys
from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
HISTORY_FILE = "history.json"
SCHEDULES = (None, "cosine", "plateau")
PRECISIONS = ("auto", "bf16", "fp32")
# Config keys that change how a run executes but not what it computes: a resumed run may differ
# in them (e.g. more DataLoader workers on the new machine).
RESUME_FREE_KEYS = frozenset(
    {"num_workers", "persistent_workers", "checkpoint_every_steps", "resume", "val_batch_size"}
)


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (the ``train`` block of the parameters).

    ``patience`` counts validations without an improvement larger than ``min_delta`` (``None``
    disables early stopping); validation runs every ``eval_every`` epochs and after the last one.
    ``schedule``: ``None`` (constant), ``"cosine"`` (per step, from ``lr`` down to ``min_lr``
    over all steps) or ``"plateau"`` (multiply by ``plateau_factor`` after ``plateau_patience``
    validations without improvement); ``warmup_steps`` ramps the rate linearly from 0 under any
    schedule. ``grad_clip`` is a max global L2 norm (``None`` = off). ``device``: ``"auto"``
    (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``. ``precision``: ``"auto"``
    (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"`` or ``"fp32"``. ``deterministic``: ``None``
    means on for CPU, off for CUDA (where it costs speed). ``max_batches_per_epoch`` caps an
    epoch (a different random subset each epoch). ``checkpoint_every_steps`` also writes
    ``last.pt`` inside epochs (always at the end of each epoch).
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str | None = None
    warmup_steps: int = 0
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    grad_clip: float | None = None
    patience: int | None = 10
    min_delta: float = 0.0
    eval_every: int = 1
    seed: int = 0
    num_workers: int = 0
    persistent_workers: bool = True
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = False
    deterministic: bool | None = None
    max_batches_per_epoch: int | None = None
    val_batch_size: int | None = None
    checkpoint_every_steps: int | None = None
    resume: bool = True
    param_path: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.param_path or "train"
        for name in ("epochs", "batch_size", "eval_every", "plateau_patience"):
            _require_int(where, name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed", "num_workers"):
            _require_int(where, name, getattr(self, name), minimum=0)
        for name in ("patience", "max_batches_per_epoch", "val_batch_size",
                     "checkpoint_every_steps"):
            if getattr(self, name) is not None:
                _require_int(where, name, getattr(self, name), minimum=1)
        _require_real(where, "lr", self.lr, positive=True)
        for name in ("weight_decay", "min_delta", "min_lr"):
            _require_real(where, name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            _require_real(where, "grad_clip", self.grad_clip, positive=True)
        _require_real(where, "plateau_factor", self.plateau_factor, positive=True)
        if not self.plateau_factor < 1:
            raise ConfigError(f"{where}.plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.min_lr > self.lr:
            raise ConfigError(f"{where}.min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"{where}.schedule must be null, 'cosine' or 'plateau', got {self.schedule!r}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"{where}.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("persistent_workers", "channels_last", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}.{name} must be true or false, got {getattr(self, name)!r}")
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise ConfigError(
                f"{where}.deterministic must be true, false or null, got {self.deterministic!r}"
            )
        try:
            resolve_device(self.device, check_available=False)
        except ConfigError as err:
            raise ConfigError(f"{where}.device: {err}") from None

    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None, prefix: str = "train") -> TrainConfig:
        """Build from a parameters mapping; an unknown key is a ``ConfigError`` naming it."""
        return cls(**known_keys(cls, params, prefix), param_path=prefix)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the hyperparameters (what checkpoints and the tracker record)."""
        out = asdict(self)
        out.pop("param_path")
        return out


def _require_int(where: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{where}.{name} must be an integer >= {minimum}, got {value!r}")


def _require_real(where: str, name: str, value: Any, *, positive: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"{where}.{name} must be a finite number {bound}, got {value!r}")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: no autocast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


# --------------------------------------------------------------------------------------------
# the loss protocol


@runtime_checkable
class TrainingLoss(Protocol):
    """What the engine minimises: ``loss(model, x, y) -> (scalar, components)``.

    ``model`` is the (possibly DDP-wrapped) model in training mode; call it as ``model(x)`` so
    DDP synchronises gradients (extra outputs such as latent features should come from
    ``forward`` keyword arguments for the same reason). ``components`` maps names to detached
    scalars (tensors or floats) that are averaged over the epoch and logged as
    ``train_<name>``; keep them as tensors to avoid a device sync per step.

    Optional members, used when present (an ``nn.Module`` loss has them all):
    - ``to(device)``: move the loss's own modules (a frozen teacher, a projector);
    - ``parameters()``: extra parameters to optimise with the model (those with
      ``requires_grad``), e.g. a 1x1 projector of latent distillation; under DDP their
      gradients are averaged across ranks by the engine;
    - ``state_dict()`` / ``load_state_dict(state)``: saved in ``last.pt`` so a resumed run
      continues with the same extra parameters. A loss holding a frozen teacher should keep it
      out of its state dict (the teacher has its own checkpoint).
    """

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]: ...


class MSELoss:
    """The default loss: mean squared error of ``model(x)`` against ``y``."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prediction = model(x)
        _check_same_shape(prediction, y)
        return F.mse_loss(prediction.float(), y.float()), {}


def _check_same_shape(prediction: torch.Tensor, target: torch.Tensor) -> None:
    # broadcasting would silently compute a meaningless loss
    if prediction.shape != target.shape:
        raise ValueError(
            f"model output shape {tuple(prediction.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )


# --------------------------------------------------------------------------------------------
# results


@dataclass
class TrainResult:
    """What a training run produced. ``history`` has one dict per epoch (epoch, train_loss,
    val_loss (NaN when not validated that epoch), lr, time_s, samples, train_<component>)."""

    best_val_loss: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, float]]
    test_loss: float | None
    best_checkpoint: Path
    last_checkpoint: Path
    samples_per_second: float
    resumed_from_epoch: int | None = None

    @property
    def stop_reason(self) -> str:
        """Why training ended: ``early_stopping`` (validation stopped improving for
        ``patience`` validations) or ``max_epochs`` (the budget ran out first)."""
        return "early_stopping" if self.stopped_early else "max_epochs"


# --------------------------------------------------------------------------------------------
# learning-rate schedule


class LRSchedule:
    """Warmup, then constant / cosine / plateau, as one factor on the base rate.

    One object rather than chained torch schedulers because a plateau scheduler and a per-step
    warmup both write the rate and would overwrite each other; its state is a few numbers.
    """

    def __init__(self, cfg: TrainConfig, total_steps: int) -> None:
        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.step_count = 0
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def lr(self) -> float:
        cfg = self.cfg
        lr = cfg.lr
        if cfg.schedule == "cosine":
            progress = min(1.0, self.step_count / self.total_steps)
            lr = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
        elif cfg.schedule == "plateau":
            lr = cfg.lr * self.plateau_scale
        if cfg.warmup_steps and self.step_count < cfg.warmup_steps:
            lr *= (self.step_count + 1) / (cfg.warmup_steps + 1)
        return lr

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        lr = self.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def observe_validation(self, val_loss: float) -> None:
        if self.cfg.schedule != "plateau":
            return
        if val_loss < self.plateau_best - self.cfg.min_delta:
            self.plateau_best, self.plateau_bad = val_loss, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.plateau_bad = 0

    def state_dict(self) -> dict[str, float | int]:
        return {
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
        }

    def load_state_dict(self, state: Mapping[str, float | int]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])


# --------------------------------------------------------------------------------------------
# distributed context


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


# --------------------------------------------------------------------------------------------
# sampling


class _EpochSampler(Sampler[int]):
    """This rank's indices for one epoch, a window ``[start, stop)`` of its batches.

    The order comes from ``DistributedSampler`` (shuffled by ``seed + epoch``, the same on every
    rank, padded so that ranks get equal counts); ``start`` skips the batches a resumed run has
    already trained on, ``stop`` applies ``max_batches_per_epoch``.
    """

    def __init__(self, dataset: Dataset, dist_ctx: _Dist, seed: int, batch_size: int,
                 max_batches: int | None) -> None:
        self.inner = DistributedSampler(
            dataset, num_replicas=dist_ctx.world_size, rank=dist_ctx.rank, shuffle=True,
            seed=seed, drop_last=False,
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


def _make_loader(dataset: Dataset, sampler: Sampler[int] | list[int], batch_size: int,
                 cfg: TrainConfig, device: torch.device,
                 generator: torch.Generator | None = None) -> DataLoader:
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


# --------------------------------------------------------------------------------------------
# evaluation


ValMetric = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]


def squared_error_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, int]:
    """The default validation metric's parts: (sum of squared errors, number of values)."""
    prediction = model(x)
    _check_same_shape(prediction, y)
    return (prediction.float() - y.float()).square().sum(dtype=torch.float64), y.numel()


def _to_device(batch: Any, device: torch.device) -> tuple[torch.Tensor, Any]:
    # the target may be a nested mapping (distillation attaches cached teacher outputs)
    x, y = batch
    return x.to(device, non_blocking=True), _move(y, device)


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_move(v, device) for v in obj)
    return obj


@torch.no_grad()
def _metric_over(model: nn.Module, loader: Iterable, device: torch.device,
                 dtype: torch.dtype | None, metric: ValMetric, dist_ctx: _Dist) -> float:
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for batch in loader:
            x, y = _to_device(batch, device)
            with _autocast(device, dtype):
                value, count = metric(model, x, y)
            totals[0] += value.detach().to(torch.float64)
            totals[1] += count
    finally:
        model.train(was_training)
    totals = dist_ctx.all_sum(totals)
    if totals[1].item() == 0:
        raise ConfigError("evaluation set is empty")
    return float(totals[0] / totals[1])


def evaluate_mse(model: nn.Module, dataset: Dataset, batch_size: int = 32,
                 device: str | torch.device = "auto", *, precision: str = "fp32",
                 num_workers: int = 0) -> float:
    """Plain per-value MSE of ``model(x)`` against ``y`` over ``dataset`` (normalized units).

    Summed exactly over all values (not an average of batch means), so the last partial batch
    weighs what it holds.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ConfigError("evaluate_mse: the dataset is empty")
    resolved = resolve_device(device)
    model = model.to(resolved)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=resolved.type == "cuda")
    return _metric_over(model, loader, resolved, autocast_dtype(precision, resolved),
                        squared_error_sum, _Dist())


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# checkpoints and RNG state


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` so that ``path`` is always either the old or the complete new file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tracker_run_id(tracker: Any) -> str | None:
    run_id = getattr(tracker, "run_id", None)
    return None if run_id is None else str(run_id)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint written by the engine (``weights_only=True``: no code runs)."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, list(py_internal), py_gauss],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    """Seed torch (every device), NumPy and Python's ``random`` from ``seed``.

    Call it before a model is built as well as before training: the initial weights come from
    torch's global generator, which is otherwise seeded at random per process."""
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def _determinism(enabled: bool, device: torch.device):
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    previous_benchmark = torch.backends.cudnn.benchmark
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fastest kernels for fixed shapes
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous_benchmark


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _loss_parameters(loss: Any) -> list[nn.Parameter]:
    params = getattr(loss, "parameters", None)
    if params is None:
        return []
    return [p for p in params() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# the engine


@dataclass
class _State:
    """What ``last.pt`` restores besides model, optimizer, schedule and loss."""

    epochs_done: int = 0
    step_in_epoch: int = 0  # batches of the current (unfinished) epoch already trained on
    partial: dict[str, float] = field(default_factory=dict)  # running sums of that epoch
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TrainConfig,
    *,
    out_dir: str | Path,
    loss: TrainingLoss | None = None,
    tracker: Any = None,
    test_set: Dataset | None = None,
    progress: bool = True,
    val_metric: ValMetric | None = None,
) -> TrainResult:
    """Train ``model`` in place; afterwards it holds the best validation weights.

    ``loss`` defaults to ``MSELoss``; ``val_metric(model, x, y) -> (sum, count)`` defaults to the
    squared-error sum (validation loss = plain MSE in normalized units). ``tracker`` follows
    ``sdkd_pipeline.tracking.Tracker`` (``None``: nothing logged); under DDP only rank 0 uses it.
    With ``test_set`` the best weights' test MSE is returned and logged as ``test_loss``.
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train: cfg must be a TrainConfig, got {type(cfg).__name__}")
    for name, dataset in (("train_set", train_set), ("val_set", val_set), ("test_set", test_set)):
        if dataset is not None and len(dataset) == 0:  # type: ignore[arg-type]
            raise ConfigError(f"train: {name} is empty")
    device = resolve_device(cfg.device)
    dist_ctx = _setup_distributed(device)
    if dist_ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    try:
        with _determinism(deterministic, device):
            run = _Run(model, train_set, val_set, cfg, Path(out_dir), loss or MSELoss(),
                       tracker, test_set, progress, val_metric or squared_error_sum,
                       device, dist_ctx)
            result = run.execute()
            if dist_ctx.initialized_here:
                # every rank reaches the end before the group goes: a rank tearing gloo down
                # while the other still used it aborted once ("terminate called without an
                # active exception"); only on success, so a failed rank never waits here
                dist.barrier()
            return result
    finally:
        if dist_ctx.initialized_here:
            dist.destroy_process_group()


class _Run:
    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset, cfg: TrainConfig,
                 out_dir: Path, loss: Any, tracker: Any, test_set: Dataset | None,
                 progress: bool, val_metric: ValMetric, device: torch.device,
                 dist_ctx: _Dist) -> None:
        self.cfg, self.out_dir, self.loss = cfg, out_dir, loss
        self.device, self.dist = device, dist_ctx
        # a NullTracker is treated as no tracker, so matplotlib is never imported for it
        real_tracker = tracker is not None and not getattr(tracker, "is_null", False)
        self.tracker = tracker if real_tracker and dist_ctx.is_main else None
        self.progress = progress and dist_ctx.is_main
        self.val_metric = val_metric
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.dtype = autocast_dtype(cfg.precision, device)
        self.best_path = out_dir / BEST_CHECKPOINT
        self.last_path = out_dir / LAST_CHECKPOINT
        if dist_ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            for stale in out_dir.glob(".*.tmp-*"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)

        # a fresh run starts from the seed; a resumed one overwrites these states below
        seed_everything(cfg.seed + dist_ctx.rank)
        self.model = model.to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if hasattr(loss, "to"):
            loss.to(device)
        self.extra_params = _loss_parameters(loss)
        params = [p for p in self.model.parameters() if p.requires_grad] + self.extra_params
        if not params:
            raise ConfigError("train: the model has no trainable parameters")
        self.params = params
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        self.sampler = _EpochSampler(train_set, dist_ctx, cfg.seed, cfg.batch_size,
                                     cfg.max_batches_per_epoch)
        # the loader's generator only seeds worker processes; reseeded per epoch from the seed
        self.loader_generator = torch.Generator()
        self.train_loader = _make_loader(train_set, self.sampler, cfg.batch_size, cfg, device,
                                         self.loader_generator)
        val_batch = cfg.val_batch_size or cfg.batch_size
        self.val_loader = _make_loader(val_set, self._shard(val_set), val_batch, cfg, device)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.schedule = LRSchedule(cfg, cfg.epochs * self.steps_per_epoch)
        self.state = _State()
        self.resumed_from: int | None = None
        self.resumed_run: str | None = None  # the tracker run of the process that wrote last.pt
        if cfg.resume and self.last_path.exists():
            self._resume()
        elif self.best_path.exists() or self.last_path.exists():
            log.info("starting afresh in %s (resume disabled): old checkpoints are replaced",
                     out_dir)
        self.dist.barrier()  # every rank has read last.pt before rank 0 may rewrite it
        if dist_ctx.enabled:
            self.ddp_model: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        else:
            self.ddp_model = self.model

    def _shard(self, dataset: Dataset) -> list[int]:
        # evaluation shards without padding: error sums are all-reduced, so the mean is exact
        return list(range(self.dist.rank, len(dataset), self.dist.world_size))  # type: ignore[arg-type]

    # -- resume ------------------------------------------------------------------------------

    def _resume(self) -> None:
        checkpoint = load_checkpoint(self.last_path, map_location=self.device)
        saved_cfg = checkpoint["config"]
        current = self.cfg.to_dict()
        differing = sorted(
            key for key in set(saved_cfg) | set(current)
            if key not in RESUME_FREE_KEYS and saved_cfg.get(key) != current.get(key)
        )
        if differing:
            details = ", ".join(
                f"{key}: {saved_cfg.get(key)!r} -> {current.get(key)!r}" for key in differing
            )
            raise ConfigError(
                f"{self.last_path} was written with a different training config ({details}); "
                "use another output directory, restore the config, or set "
                f"{self.cfg.param_path or 'train'}.resume to false to start afresh"
            )
        sizes = {"train": len(self.train_set), "val": len(self.val_set)}  # type: ignore[arg-type]
        if checkpoint["dataset_sizes"] != sizes or checkpoint["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"{self.last_path} was written for datasets of sizes {checkpoint['dataset_sizes']}"
                f" on {checkpoint['world_size']} process(es); this run has {sizes} on "
                f"{self.dist.world_size}: resuming would not continue the same run"
            )
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        if checkpoint.get("loss_state") is not None:
            self.loss.load_state_dict(checkpoint["loss_state"])
        s = checkpoint["state"]
        self.state = _State(
            epochs_done=int(s["epochs_done"]), step_in_epoch=int(s["step_in_epoch"]),
            partial={k: float(v) for k, v in s["partial"].items()},
            best_val_loss=float(s["best_val_loss"]), best_epoch=int(s["best_epoch"]),
            bad_evals=int(s["bad_evals"]), stopped_early=bool(s["stopped_early"]),
            finished=bool(s["finished"]),
            history=[{k: float(v) for k, v in h.items()} for h in s["history"]],
        )
        _set_rng_state(checkpoint["rng"][self.dist.rank], self.device)
        self.resumed_from = self.state.epochs_done
        self.resumed_run = checkpoint.get("tracker_run_id")
        log.info("resuming %s at epoch %d, batch %d", self.last_path,
                 self.state.epochs_done + 1, self.state.step_in_epoch)

    # -- checkpoints -------------------------------------------------------------------------

    def _save_last(self) -> None:
        rng = self.dist.gather(_rng_state(self.device))  # collective: every rank takes part
        if not self.dist.is_main:
            return
        s = self.state
        loss_state = self.loss.state_dict() if hasattr(self.loss, "state_dict") else None
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "kind": "last",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "loss_state": loss_state,
            "state": {
                "epochs_done": s.epochs_done, "step_in_epoch": s.step_in_epoch,
                "partial": dict(s.partial), "best_val_loss": s.best_val_loss,
                "best_epoch": s.best_epoch, "bad_evals": s.bad_evals,
                "stopped_early": s.stopped_early, "finished": s.finished,
                "history": [dict(h) for h in s.history],
            },
            "rng": rng,
            "config": self.cfg.to_dict(),
            "dataset_sizes": {"train": len(self.train_set), "val": len(self.val_set)},  # type: ignore[arg-type]
            "world_size": self.dist.world_size,
            # so that a resumed run can name the run it continues (e.g. a killed MLflow run)
            "tracker_run_id": _tracker_run_id(self.tracker),
        }
        _atomic_torch_save(checkpoint, self.last_path)

    def _save_best(self, epoch: int, val_loss: float) -> None:
        if not self.dist.is_main:
            return
        _atomic_torch_save({
            "format": CHECKPOINT_FORMAT,
            "kind": "best",
            "model": self.model.state_dict(),
            "model_class": type(self.model).__name__,
            "epoch": epoch,
            "val_loss": val_loss,
            "config": self.cfg.to_dict(),
        }, self.best_path)

    # -- the loop ----------------------------------------------------------------------------

    def execute(self) -> TrainResult:
        cfg, state = self.cfg, self.state
        if self.tracker is not None:
            self.tracker.log_params({f"train.{k}": v for k, v in cfg.to_dict().items()})
            if self.resumed_from is not None:
                resumed = {
                    "resumed_from_epoch": self.resumed_from,
                    "resumed_from_batch": state.step_in_epoch,
                }
                if self.resumed_run:
                    resumed["resumed_from_run"] = self.resumed_run
                self.tracker.set_tags(resumed)
            for row in state.history:  # a resumed run's earlier epochs, so the run is complete
                self._log_epoch(row)
        bar = self._progress_bar()
        trained_samples, train_seconds = 0, 0.0
        try:
            while not state.finished and state.epochs_done < cfg.epochs:
                epoch = state.epochs_done + 1
                samples, seconds = self._train_epoch(epoch, bar)
                trained_samples += samples
                train_seconds += seconds
        finally:
            if bar is not None:
                bar.close()
        if not state.finished:
            state.finished = True
            self._save_last()
        return self._finish(trained_samples * self.dist.world_size, train_seconds)

    def _progress_bar(self) -> Any:
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional on bare machines
            return None
        done = self.state.epochs_done * self.steps_per_epoch + self.state.step_in_epoch
        return tqdm(total=self.cfg.epochs * self.steps_per_epoch, initial=done, unit="batch",
                    dynamic_ncols=True, desc="train")

    def _train_epoch(self, epoch: int, bar: Any) -> tuple[int, float]:
        cfg, state = self.cfg, self.state
        start_step = state.step_in_epoch
        self.sampler.set_epoch(epoch - 1, start_batch=start_step)
        self.loader_generator.manual_seed(cfg.seed * 100_003 + epoch)
        partial = state.partial or {}
        # running sums on the device: no host sync per step
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), dtype=torch.float64,
                                device=self.device)
        component_sums: dict[str, torch.Tensor] = {
            key[len("sum_"):]: torch.tensor(value, dtype=torch.float64, device=self.device)
            for key, value in partial.items() if key.startswith("sum_")
        }
        samples = int(partial.get("samples", 0))
        elapsed_before = float(partial.get("time_s", 0.0))
        self.ddp_model.train()
        t0 = time.perf_counter()
        last_postfix = 0.0
        step = start_step
        for batch in self.train_loader:
            x, y = _to_device(batch, self.device)
            n = x.shape[0]
            self.schedule.apply(self.optimizer)
            self.optimizer.zero_grad(set_to_none=True)
            with _autocast(self.device, self.dtype):
                loss, components = self.loss(self.ddp_model, x, y)
            loss.backward()
            if self.dist.enabled and self.extra_params:
                self._average_extra_gradients()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            step += 1
            samples += n
            loss_sum += loss.detach().to(torch.float64) * n
            for name, value in components.items():
                value = torch.as_tensor(value, device=self.device).detach().to(torch.float64)
                component_sums[name] = component_sums.get(name, 0.0) + value * n
            if bar is not None:
                bar.update(1)
                now = time.perf_counter()
                if now - last_postfix > 1.0:  # one host sync per second at most
                    last_postfix = now
                    bar.set_postfix(epoch=f"{epoch}/{cfg.epochs}",
                                    loss=f"{(loss_sum / max(samples, 1)).item():.4g}",
                                    best_val=f"{state.best_val_loss:.4g}")
            if (cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0
                    and step < self.steps_per_epoch):
                state.step_in_epoch = step
                state.partial = {
                    "loss_sum": float(loss_sum), "samples": samples,
                    "time_s": elapsed_before + time.perf_counter() - t0,
                    **{f"sum_{k}": float(v) for k, v in component_sums.items()},
                }
                self._save_last()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        new_samples = samples - int(partial.get("samples", 0))

        train_loss = float(loss_sum) / max(samples, 1)
        if self.dist.enabled:  # the epoch's mean over all ranks' samples
            totals = self.dist.all_sum(torch.tensor([float(loss_sum), samples],
                                                    dtype=torch.float64, device=self.device))
            train_loss = float(totals[0] / totals[1])
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: train loss {train_loss} in epoch {epoch} (lower train.lr "
                f"or set train.grad_clip); {self.last_path} holds the last finite state"
            )
        row: dict[str, float] = {
            "epoch": float(epoch), "train_loss": train_loss, "val_loss": math.nan,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": elapsed_before + seconds, "samples": float(samples * self.dist.world_size),
        }
        for name, total in component_sums.items():
            row[f"train_{name}"] = float(total) / max(samples, 1)

        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            val_loss = _metric_over(_unwrap(self.ddp_model), self.val_loader, self.device,
                                    self.dtype, self.val_metric, self.dist)
            row["val_loss"] = val_loss
            self.schedule.observe_validation(val_loss)
            if val_loss < state.best_val_loss - cfg.min_delta:
                state.best_val_loss, state.best_epoch, state.bad_evals = val_loss, epoch, 0
                self._save_best(epoch, val_loss)
            else:
                state.bad_evals += 1
            stop = cfg.patience is not None and state.bad_evals >= cfg.patience
            # identical on every rank already (all-reduced loss); rank 0's word makes it certain
            if self.dist.broadcast_flag(stop, self.device):
                state.stopped_early = True
                state.finished = True
        state.history.append(row)
        state.epochs_done = epoch
        state.step_in_epoch = 0
        state.partial = {}
        if state.epochs_done >= cfg.epochs:
            state.finished = True
        self._save_last()
        if self.dist.is_main:
            _atomic_write_text(json.dumps(state.history, indent=1), self.out_dir / HISTORY_FILE)
        self._log_epoch(row)
        log.info("epoch %d/%d: train_loss %.5g, val_loss %.5g, lr %.3g, %.1f s%s", epoch,
                 cfg.epochs, row["train_loss"], row["val_loss"], row["lr"], row["time_s"],
                 " (early stop)" if state.stopped_early else "")
        return new_samples, seconds

    def _average_extra_gradients(self) -> None:
        # DDP averages the model's gradients; a loss's own parameters are outside DDP
        for param in self.extra_params:
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad /= self.dist.world_size

    def _log_epoch(self, row: Mapping[str, float]) -> None:
        if self.tracker is None:
            return
        metrics = {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}
        metrics["epoch_time_s"] = metrics.pop("time_s")
        self.tracker.log_metrics(metrics, step=int(row["epoch"]))

    def _finish(self, trained_samples: int, train_seconds: float) -> TrainResult:
        state = self.state
        self.dist.barrier()  # rank 0 has written best.pt
        best = load_checkpoint(self.best_path, map_location=self.device)
        model = _unwrap(self.ddp_model)
        model.load_state_dict(best["model"])
        test_loss = None
        if self.test_set is not None:
            loader = _make_loader(self.test_set, self._shard(self.test_set),
                                  self.cfg.val_batch_size or self.cfg.batch_size, self.cfg,
                                  self.device)
            test_loss = _metric_over(model, loader, self.device, self.dtype, self.val_metric,
                                     self.dist)
        throughput = trained_samples / train_seconds if train_seconds > 0 else math.nan
        result = TrainResult(
            best_val_loss=state.best_val_loss, best_epoch=state.best_epoch,
            epochs_run=state.epochs_done, stopped_early=state.stopped_early,
            history=[dict(h) for h in state.history], test_loss=test_loss,
            best_checkpoint=self.best_path, last_checkpoint=self.last_path,
            samples_per_second=throughput, resumed_from_epoch=self.resumed_from,
        )
        if self.tracker is not None:
            self._log_final(result)
        return result

    def _log_final(self, result: TrainResult) -> None:
        tracker = self.tracker
        final = {"best_val_loss": result.best_val_loss, "best_epoch": float(result.best_epoch),
                 "epochs_run": float(result.epochs_run),
                 "stopped_early": float(result.stopped_early)}
        tracker.set_tags({"stop_reason": result.stop_reason})
        if math.isfinite(result.samples_per_second):
            final["samples_per_second"] = result.samples_per_second
        if result.test_loss is not None:
            final["test_loss"] = result.test_loss
        tracker.log_metrics(final, step=result.epochs_run)
        tracker.log_dict(self.cfg.to_dict(), "train_config.json")
        tracker.log_artifact(result.best_checkpoint, "checkpoints")
        tracker.log_artifact(self.out_dir / HISTORY_FILE)
        if result.history:
            from sdkd_pipeline.tracking import plot_loss_curves  # imports matplotlib lazily

            tracker.log_figure(plot_loss_curves(result.history), "loss_curves.png")
