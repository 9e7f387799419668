"""The distillation node: a student trained by the shared training node with a KD loss."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import xarray as xr

from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.distill.config import DistillConfig
from sdkd_pipeline.distill.setup import DistillCache, prepare_distillation, state_digest
from sdkd_pipeline.distill.teachers import choose_teachers, load_teachers
from sdkd_pipeline.pipelines.forecaster import LossSetup, train_forecaster
from sdkd_pipeline.training import TrainConfig, autocast_dtype, resolve_device

logger = logging.getLogger(__name__)

TEACHER_INPUT_PREFIX = "teacher_"

# Teacher outputs on a store's training windows (and function-matching inputs), kept for the
# other distill nodes of the same `kedro run` (one process): each teacher runs once per store,
# not once per student and method. Keyed by the teacher's weights and the inputs' content.
_CACHE = DistillCache()


def distill_student(
    tensors: xr.Dataset,
    distill: Mapping[str, Any],
    training: Mapping[str, Any],
    tracking: Mapping[str, Any],
    progress: bool = True,
    shared_training: Mapping[str, Any] | None = None,
    *,
    dataset: str,
    student: str,
    method: str,
    distill_config: DistillConfig | None = None,
    **teacher_checkpoints: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``student`` on ``dataset`` with distillation method (or variant) ``method``.

    ``teacher_checkpoints`` are the checkpoints written by the teacher pipeline, passed as
    ``teacher_<name>``. Returns the student's checkpoint and summary, like a teacher's.
    ``distill_config`` is ``method``'s config as the pipeline parsed it from the same
    parameters (so it is parsed once per run); without it (a direct call) it is parsed here.
    """
    cfg = distill_config or DistillConfig.from_params(method, distill)
    checkpoints = {
        name.removeprefix(TEACHER_INPUT_PREFIX): ckpt for name, ckpt in teacher_checkpoints.items()
    }
    chosen = choose_teachers(cfg, {n: float(c["best_val_loss"]) for n, c in checkpoints.items()})
    identity = {
        "distill": cfg.to_dict(),
        # a retrained teacher makes a new student run, not a resumed one; the weights' digest
        # (not the teacher's MLflow run id, which is new each time its node reloads a finished
        # run) so that a killed distillation resumes in its own folder
        "teachers": {
            n: [
                state_digest(checkpoints[n]["state_dict"]),
                checkpoints[n]["best_val_loss"],
                checkpoints[n]["best_epoch"],
            ]
            for n in chosen
        },
    }

    def setup(
        model: torch.nn.Module, splits: Mapping[str, WindowDataset], train_cfg: TrainConfig
    ) -> LossSetup:
        return _setup(cfg, {n: checkpoints[n] for n in chosen}, model, splits, train_cfg)

    checkpoint, summary = train_forecaster(
        tensors,
        (distill or {}).get(student),
        dict(training or {}),
        dict(tracking or {}),
        progress,
        dataset=dataset,
        model_name=student,
        role="student",
        method=cfg.name,
        setup=setup,
        identity=identity,
        param_root="distill",
        shared_training=shared_training,
    )
    summary["teachers"] = chosen
    summary["distill_method"] = cfg.method
    summary["cutoff"] = checkpoint.get("cutoff")
    return checkpoint, summary


def _setup(
    cfg: DistillConfig,
    checkpoints: Mapping[str, Mapping[str, Any]],
    model: torch.nn.Module,
    splits: Mapping[str, WindowDataset],
    train_cfg: TrainConfig,
) -> LossSetup:
    train_set = splits["train"]
    device = resolve_device(train_cfg.device, param=f"{train_cfg.param_path}.device")
    teachers = load_teachers(
        checkpoints, train_set.model_shape, train_set.mean, train_set.std, device
    )
    prepared = prepare_distillation(
        cfg,
        teachers,
        model,
        train_set,
        device=device,
        autocast_dtype=autocast_dtype(train_cfg.precision, device),
        batch_size=train_cfg.val_batch_size or train_cfg.batch_size,
        cache=_CACHE,
    )
    extra_ckpt: dict[str, Any] = {
        "distill": cfg.to_dict(),
        "teachers": list(checkpoints),
        "cutoff": prepared.cutoff,
    }
    return LossSetup(
        loss=prepared.loss,
        train_set=None if prepared.loss is None else prepared.train_set,
        params=prepared.params,
        checkpoint=extra_ckpt,
    )
