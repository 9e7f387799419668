"""The teachers a student learns from: choosing them, running them, caching their outputs.

Teachers are frozen: they run in eval mode without gradients, so their outputs for a training
window never change during a run. When the outputs of all training windows fit in memory
(``teacher_cache``), they are computed once before training and handed to the loss with each
batch (``WithTeacherTargets``); the loss then never runs a teacher. Otherwise the loss runs the
teachers on every batch. Both paths give the same numbers: same eval-mode forward, same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.errors import ConfigError, DataError
from sdkd_pipeline.models.checkpoint import Checkpoint, check_checkpoint_matches
from sdkd_pipeline.training.evaluate import _autocast

log = logging.getLogger(__name__)

TEACHER_COMMAND = "kedro run --pipelines=teacher"


def choose_teachers(cfg: DistillConfig, val_losses: Mapping[str, float]) -> list[str]:
    """The teacher names ``cfg``'s method learns from, given each available teacher's best
    validation MSE. Single-teacher methods take ``cfg.teacher`` (``best``: lowest validation
    MSE); multi-teacher methods take ``cfg.teachers`` or every available teacher."""
    available = sorted(val_losses)
    if not cfg.needs_teachers:
        return []
    if not available:
        raise ConfigError(
            f"method {cfg.name!r} needs teacher checkpoints and none is enabled (teacher.models "
            f"is empty); enable teachers and run `{TEACHER_COMMAND}` first"
        )
    if not cfg.multi_teacher:
        if cfg.teacher == "best":
            return [min(available, key=lambda n: (val_losses[n], n))]
        if cfg.teacher not in val_losses:
            raise ConfigError(
                f"distill.teacher: {cfg.teacher!r} is not among the available teachers {available}"
            )
        return [cfg.teacher]
    names = list(cfg.teachers) or available
    missing = [n for n in names if n not in val_losses]
    if missing:
        raise ConfigError(
            f"distill.teachers: {missing} are not among the available teachers {available}"
        )
    if len(names) < 2:
        raise ConfigError(
            f"method {cfg.name!r} ({cfg.method}) distills from several teachers; "
            f"only {names} is available: enable two or more in teacher.models"
        )
    return names


def check_teacher_matches(
    name: str,
    checkpoint: Mapping[str, Any],
    shape: Mapping[str, int],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> None:
    """``check_checkpoint_matches`` for teacher ``name``: a student learns from a teacher
    trained on the data it sees."""
    check_checkpoint_matches(f"teacher {name!r}", TEACHER_COMMAND, checkpoint, shape, mean, std)


def load_teachers(
    checkpoints: Mapping[str, Mapping[str, Any]],
    shape: Mapping[str, int],
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device | str = "cpu",
) -> dict[str, nn.Module]:
    """The frozen teachers of ``checkpoints`` (written by the teacher pipeline), each checked
    to be the architecture it is named after (a file copied over another teacher's is refused)
    and against the data the student sees (``check_teacher_matches``), on ``device``."""
    teachers: dict[str, nn.Module] = {}
    for name, ckpt in checkpoints.items():
        checkpoint = Checkpoint.of(ckpt, origin=f"teacher {name!r}").expect_model(name)
        check_teacher_matches(name, checkpoint, shape, mean, std)
        teachers[name] = freeze(checkpoint.build_model()).to(device)
    return teachers


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


@torch.no_grad()
def run_teacher(model: nn.Module, x: torch.Tensor, latents: bool) -> dict[str, torch.Tensor]:
    """The teacher's prediction (and with ``latents`` its latent ``state``, the latent after
    the last block's residual), float32."""
    if latents:
        prediction, features = model.forward_features(x)
        if "state" not in features:
            raise ConfigError(
                f"latent distillation needs the teacher's latent 'state'; "
                f"{type(model).__name__} has {sorted(features)}"
            )
        return {"prediction": prediction.float(), "state": features["state"].float()}
    return {"prediction": model(x).float()}


def cache_bytes(teachers: Mapping[str, nn.Module], dataset: Dataset, latents: bool) -> int:
    """Memory the cached outputs of ``teachers`` on every window of ``dataset`` would take."""
    x, _ = dataset[0]
    device = next(next(iter(teachers.values())).parameters()).device
    per_window = 0
    for model in teachers.values():
        out = run_teacher(model, x[None].to(device), latents)
        per_window += sum(t.numel() * 4 for t in out.values())
    return per_window * len(dataset)  # type: ignore[arg-type]


def precompute_teacher_outputs(
    teachers: Mapping[str, nn.Module],
    dataset: Dataset,
    *,
    latents: bool,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{teacher: {output: Tensor (N, ...)}}`` for every window of ``dataset``, on the CPU."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks: dict[str, dict[str, list[torch.Tensor]]] = {n: {} for n in teachers}
    for x, _ in loader:
        x = x.to(device)
        for name, model in teachers.items():
            with _autocast(device, autocast_dtype):
                out = run_teacher(model, x, latents)
            for key, value in out.items():
                chunks[name].setdefault(key, []).append(value.float().cpu())
    return {name: {k: torch.cat(v) for k, v in outs.items()} for name, outs in chunks.items()}


def should_cache(cfg: DistillConfig, n_bytes: int) -> bool:
    if cfg.teacher_cache == "off":
        return False
    if cfg.teacher_cache == "on":
        return True
    return n_bytes <= cfg.cache_max_gb * 2**30


class WithTeacherTargets(Dataset):
    """``dataset``'s windows with the teachers' cached outputs attached to the target:
    item ``i`` is ``(x, {"y": y, "teachers": {name: {output: tensor}}})``."""

    def __init__(self, dataset: Dataset, cache: Mapping[str, Mapping[str, torch.Tensor]]):
        n = len(dataset)  # type: ignore[arg-type]
        for name, outs in cache.items():
            for key, value in outs.items():
                if value.shape[0] != n:
                    raise ValueError(
                        f"cached output {name}.{key} has {value.shape[0]} windows, the dataset {n}"
                    )
        self.dataset = dataset
        self.cache = cache

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _attach(self, index: int, item: Sequence[torch.Tensor]) -> tuple[Any, Any]:
        x, y = item
        teachers = {
            name: {k: v[index] for k, v in outs.items()} for name, outs in self.cache.items()
        }
        return x, {"y": y, "teachers": teachers}

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self._attach(index, self.dataset[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        # keep the wrapped dataset's batched (chunk-aware) reads
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return [self._attach(i, item) for i, item in zip(indices, items, strict=True)]


def describe_cache(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes < 2**30 else f"{n_bytes / 2**30:.2f} GiB"


def finite_or_raise(name: str, outputs: Mapping[str, torch.Tensor]) -> None:
    for key, value in outputs.items():
        if not torch.isfinite(value).all():
            raise DataError(
                f"teacher {name!r} produced non-finite {key} values; its checkpoint "
                f"is unusable, rerun `{TEACHER_COMMAND}`"
            )


__all__ = [
    "TEACHER_COMMAND",
    "WithTeacherTargets",
    "cache_bytes",
    "check_checkpoint_matches",
    "check_teacher_matches",
    "choose_teachers",
    "describe_cache",
    "finite_or_raise",
    "freeze",
    "load_teachers",
    "precompute_teacher_outputs",
    "run_teacher",
    "should_cache",
]
