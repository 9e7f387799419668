"""The one training engine: teachers and students, plain training and distillation alike.

``train(model, train_set, val_set, cfg, out_dir=...)`` runs Adam on a pluggable loss, validates
with the plain MSE of ``model(x)`` against ``y`` (normalized units), stops early on the
validation loss, and keeps two checkpoints in ``out_dir`` (written atomically, see
``checkpoint``):

- ``best.pt``: the model weights of the best validation epoch, that epoch, its validation loss
  and the training config;
- ``last.pt``: everything needed to continue exactly where the run stopped: model, optimizer,
  learning-rate schedule, the loss's own state (e.g. a distillation projector), epoch and step,
  best-so-far, early-stopping counter, history, and the RNG states (torch, CUDA, NumPy, Python)
  of every process.

A run killed at any point (even SIGKILL) resumes from ``last.pt`` when ``train`` is called again
with the same ``out_dir`` and config, and ends bit-identical on CPU to an uninterrupted run: the
shuffling of epoch ``e`` is a function of ``(seed, e)`` alone (``DistributedSampler`` with
``set_epoch``), and a mid-epoch checkpoint (``checkpoint_every_steps``) records how many batches
of that epoch are done, so the resumed run skips them without reading them. Resuming with a
different config is an error (``ConfigError`` naming the keys) rather than a silent fresh start
that would overwrite the old run; ``resume: false`` starts afresh on purpose.

Distillation plugs in as a loss (see ``TrainingLoss``), not as a second loop. Under ``torchrun``
every rank trains (DDP, see ``distributed``); rank 0 alone writes checkpoints and logs to the
tracker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from sdkd_pipeline.devices import resolve_device
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.training.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    _atomic_torch_save,
    _atomic_write_text,
    _determinism,
    _rng_state,
    _set_rng_state,
    _tracker_run_id,
    load_checkpoint,
    seed_everything,
)
from sdkd_pipeline.training.config import RESUME_FREE_KEYS, TrainConfig, autocast_dtype
from sdkd_pipeline.training.distributed import (
    _Dist,
    _EpochSampler,
    _make_loader,
    _setup_distributed,
    _unwrap,
)
from sdkd_pipeline.training.evaluate import (
    ValMetric,
    _autocast,
    _metric_over,
    _to_device,
    squared_error_sum,
)
from sdkd_pipeline.training.losses import MSELoss, TrainingLoss, _loss_parameters
from sdkd_pipeline.training.schedule import LRSchedule
from sdkd_pipeline.training.state import TrainResult, _State

log = logging.getLogger(__name__)


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
    device = resolve_device(cfg.device, param=f"{cfg.param_path or 'train'}.device")
    dist_ctx = _setup_distributed(device)
    if dist_ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_ctx.local_rank)
    deterministic = cfg.deterministic if cfg.deterministic is not None else device.type == "cpu"
    try:
        with _determinism(deterministic, device):
            run = _Run(
                model,
                train_set,
                val_set,
                cfg,
                Path(out_dir),
                loss or MSELoss(),
                tracker,
                test_set,
                progress,
                val_metric or squared_error_sum,
                device,
                dist_ctx,
            )
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
    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset,
        cfg: TrainConfig,
        out_dir: Path,
        loss: Any,
        tracker: Any,
        test_set: Dataset | None,
        progress: bool,
        val_metric: ValMetric,
        device: torch.device,
        dist_ctx: _Dist,
    ) -> None:
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

        self.sampler = _EpochSampler(
            train_set, dist_ctx, cfg.seed, cfg.batch_size, cfg.max_batches_per_epoch
        )
        # the loader's generator only seeds worker processes; reseeded per epoch from the seed
        self.loader_generator = torch.Generator()
        self.train_loader = _make_loader(
            train_set, self.sampler, cfg.batch_size, cfg, device, self.loader_generator
        )
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
            log.info(
                "starting afresh in %s (resume disabled): old checkpoints are replaced", out_dir
            )
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

    def _load_last(self) -> dict[str, Any] | None:
        """``last.pt``, or ``None`` when it cannot be read (truncated by a full disk, a pickle
        payload, another format): it is moved aside (named in the warning) and the run starts
        afresh, instead of failing every rerun on the same file."""
        try:
            return load_checkpoint(self.last_path, map_location=self.device)
        except (DataError, ConfigError) as exc:
            aside = self.last_path.with_name(
                f"{self.last_path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            if self.dist.is_main and self.last_path.exists():
                os.replace(self.last_path, aside)
            log.warning("%s; moved it to %s, starting this run afresh", exc, aside)
            return None

    def _resume(self) -> None:
        checkpoint = self._load_last()
        if checkpoint is None:
            return
        saved_cfg = checkpoint["config"]
        current = self.cfg.to_dict()
        differing = sorted(
            key
            for key in set(saved_cfg) | set(current)
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
            epochs_done=int(s["epochs_done"]),
            step_in_epoch=int(s["step_in_epoch"]),
            partial={k: float(v) for k, v in s["partial"].items()},
            best_val_loss=float(s["best_val_loss"]),
            best_epoch=int(s["best_epoch"]),
            bad_evals=int(s["bad_evals"]),
            stopped_early=bool(s["stopped_early"]),
            finished=bool(s["finished"]),
            history=[{k: float(v) for k, v in h.items()} for h in s["history"]],
        )
        _set_rng_state(checkpoint["rng"][self.dist.rank], self.device)
        self.resumed_from = self.state.epochs_done
        self.resumed_run = checkpoint.get("tracker_run_id")
        log.info(
            "resuming %s at epoch %d, batch %d",
            self.last_path,
            self.state.epochs_done + 1,
            self.state.step_in_epoch,
        )

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
                "epochs_done": s.epochs_done,
                "step_in_epoch": s.step_in_epoch,
                "partial": dict(s.partial),
                "best_val_loss": s.best_val_loss,
                "best_epoch": s.best_epoch,
                "bad_evals": s.bad_evals,
                "stopped_early": s.stopped_early,
                "finished": s.finished,
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
        _atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "kind": "best",
                "model": self.model.state_dict(),
                "model_class": type(self.model).__name__,
                "epoch": epoch,
                "val_loss": val_loss,
                "config": self.cfg.to_dict(),
            },
            self.best_path,
        )

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
        return tqdm(
            total=self.cfg.epochs * self.steps_per_epoch,
            initial=done,
            unit="batch",
            dynamic_ncols=True,
            desc="train",
            disable=None,  # off when the output is not a terminal (a log file, CI)
        )

    def _train_epoch(self, epoch: int, bar: Any) -> tuple[int, float]:
        """Train epoch ``epoch`` (from ``state.step_in_epoch`` when resumed mid-epoch), validate
        when due, and write ``last.pt`` and the history.

        One function because it is one sequence: the running sums on the device, the mid-epoch
        checkpoint and the end-of-epoch bookkeeping share one state that a split would only pass
        around.
        """
        cfg, state = self.cfg, self.state
        start_step = state.step_in_epoch
        self.sampler.set_epoch(epoch - 1, start_batch=start_step)
        self.loader_generator.manual_seed(cfg.seed * 100_003 + epoch)
        partial = state.partial or {}
        # running sums on the device: no host sync per step
        loss_sum = torch.tensor(
            partial.get("loss_sum", 0.0), dtype=torch.float64, device=self.device
        )
        component_sums: dict[str, torch.Tensor] = {
            key[len("sum_") :]: torch.tensor(value, dtype=torch.float64, device=self.device)
            for key, value in partial.items()
            if key.startswith("sum_")
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
                    bar.set_postfix(
                        epoch=f"{epoch}/{cfg.epochs}",
                        loss=f"{(loss_sum / max(samples, 1)).item():.4g}",
                        best_val=f"{state.best_val_loss:.4g}",
                    )
            if (
                cfg.checkpoint_every_steps
                and step % cfg.checkpoint_every_steps == 0
                and step < self.steps_per_epoch
            ):
                state.step_in_epoch = step
                state.partial = {
                    "loss_sum": float(loss_sum),
                    "samples": samples,
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
            totals = self.dist.all_sum(
                torch.tensor([float(loss_sum), samples], dtype=torch.float64, device=self.device)
            )
            train_loss = float(totals[0] / totals[1])
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: train loss {train_loss} in epoch {epoch} (lower train.lr "
                f"or set train.grad_clip); {self.last_path} holds the last finite state"
            )
        row: dict[str, float] = {
            "epoch": float(epoch),
            "train_loss": train_loss,
            "val_loss": math.nan,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": elapsed_before + seconds,
            "samples": float(samples * self.dist.world_size),
        }
        for name, total in component_sums.items():
            row[f"train_{name}"] = float(total) / max(samples, 1)

        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            val_loss = _metric_over(
                _unwrap(self.ddp_model),
                self.val_loader,
                self.device,
                self.dtype,
                self.val_metric,
                self.dist,
            )
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
        log.info(
            "epoch %d/%d: train_loss %.5g, val_loss %.5g, lr %.3g, %.1f s%s",
            epoch,
            cfg.epochs,
            row["train_loss"],
            row["val_loss"],
            row["lr"],
            row["time_s"],
            " (early stop)" if state.stopped_early else "",
        )
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
            loader = _make_loader(
                self.test_set,
                self._shard(self.test_set),
                self.cfg.val_batch_size or self.cfg.batch_size,
                self.cfg,
                self.device,
            )
            test_loss = _metric_over(
                model, loader, self.device, self.dtype, self.val_metric, self.dist
            )
        throughput = trained_samples / train_seconds if train_seconds > 0 else math.nan
        result = TrainResult(
            best_val_loss=state.best_val_loss,
            best_epoch=state.best_epoch,
            epochs_run=state.epochs_done,
            stopped_early=state.stopped_early,
            history=[dict(h) for h in state.history],
            test_loss=test_loss,
            best_checkpoint=self.best_path,
            last_checkpoint=self.last_path,
            samples_per_second=throughput,
            resumed_from_epoch=self.resumed_from,
        )
        if self.tracker is not None:
            self._log_final(result)
        return result

    def _log_final(self, result: TrainResult) -> None:
        tracker = self.tracker
        final = {
            "best_val_loss": result.best_val_loss,
            "best_epoch": float(result.best_epoch),
            "epochs_run": float(result.epochs_run),
            "stopped_early": float(result.stopped_early),
        }
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
